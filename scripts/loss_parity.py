"""Loss parity on one GPU: SwiGLU vs ReLU² dense vs ReLU² with act24's 2:4 FFN after the dense
warm-up; same data (the standard-library corpus), seed and steps. Writes OUT/loss_parity.json
(after each run) and OUT/loss_parity.png.

Usage: PYTHONPATH=src python scripts/loss_parity.py OUT [--steps 1600] [--preset 25m]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import torch

from act24.bench.common import header, write_result
from act24.model import preset
from act24.train import TrainConfig, Trainer, load_corpus
from act24.train.plots import read_metrics

FFNS = ("swiglu", "relu2", "relu2-sparse")


def plot(out: pathlib.Path, runs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for ffn in runs:
        val = [r for r in read_metrics(out / ffn / "metrics.jsonl") if "val_loss" in r]
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", ms=3, label=ffn)
    ax.set(xlabel="step", ylabel="validation loss (nats/byte)", title="loss parity", ylim=(None, None))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_parity.png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--preset", default="25m")
    args = p.parse_args()
    out = pathlib.Path(args.out)
    corpus = load_corpus(None)
    device = torch.device("cuda")
    runs = []
    for ffn in FFNS:
        model_cfg = preset(args.preset, ffn=ffn)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, eval_interval=200, eval_batches=32,
                          checkpoint_interval=args.steps, seed=0)
        trainer = Trainer(model_cfg, cfg, corpus, out / ffn, device, progress=False)
        start = time.perf_counter()
        summary = trainer.run()
        elapsed = time.perf_counter() - start
        logged = [r for r in read_metrics(out / ffn / "metrics.jsonl") if "tokens_per_s" in r]
        runs.append({
            "ffn": ffn,
            "params": trainer.model.num_params(),
            "tokens": trainer.tokens_seen,
            "val_loss": summary["val_loss"],
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in logged[len(logged) // 2:]),
            "wall_s": elapsed,
            "act_sparsity": summary.get("act_sparsity"),
            "dropped_fraction": summary.get("dropped_fraction"),
            "dense_warmup_steps": cfg.resolved_dense_warmup if ffn == "relu2-sparse" else None,
        })
        print(runs[-1], flush=True)
        write_result(out, "loss_parity", {**header(), "preset": args.preset, "steps": args.steps,
                                          "batch_size": args.batch_size, "seq_len": model_cfg.seq_len, "runs": runs})
        plot(out, [r["ffn"] for r in runs])


if __name__ == "__main__":
    main()
