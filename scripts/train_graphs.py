"""`act24 train` on the 25M preset, eager and with --cuda-graphs, dense ReLU² and 2:4 sparse: tokens/s
after the warm-up (median of the logged intervals) and the final losses. Writes OUT/train_graphs.json.

Usage: PYTHONPATH=src python scripts/train_graphs.py OUT [--steps 160]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile

import torch

from act24.bench.common import header, write_result
from act24.model import preset
from act24.train import TrainConfig, Trainer, load_corpus
from act24.train.plots import read_metrics


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=160)
    args = p.parse_args()
    warmup = args.steps // 4
    corpus = load_corpus(None)
    rows = []
    for ffn in ("relu2", "relu2-sparse"):
        for graphs in (False, True):
            cfg = TrainConfig(steps=args.steps, batch_size=32, dense_warmup_steps=warmup, eval_interval=args.steps,
                              log_interval=10, checkpoint_interval=args.steps, cuda_graphs=graphs)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(preset("25m", ffn=ffn), cfg, corpus, pathlib.Path(tmp), torch.device("cuda"),
                                  progress=False)
                summary = trainer.run()
                logged = read_metrics(pathlib.Path(tmp) / "metrics.jsonl")
            after = [r["tokens_per_s"] for r in logged if "tokens_per_s" in r and r["step"] > warmup + 10]
            rows.append({"ffn": ffn, "cuda_graphs": graphs, "tokens_per_s": statistics.median(after),
                         "loss": summary["loss"], "val_loss": summary["val_loss"]})
            print(rows[-1], flush=True)
    write_result(args.out, "train_graphs", {**header(), "preset": "25m", "steps": args.steps, "batch_size": 32,
                                            "dense_warmup_steps": warmup, "rows": rows})


if __name__ == "__main__":
    main()
