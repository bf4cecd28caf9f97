"""Training throughput of the ~1B config (d=2048, hidden 8192, 24 layers, seq 4096), dense vs 2:4
sparse FFNs, in one process on the same model; synthetic tokens. The modes alternate (dense, sparse, sparse, dense,
... for --rounds rounds, after one untimed run of each: the H200 runs this at its power cap, and a run
after a pause gets a higher clock for a while, so neither mode may always go first) and each mode's
median run is reported, with the SM clock and power over each run's timed steps (nvidia-smi). Writes
OUT/train_throughput.json.

Usage: PYTHONPATH=src python scripts/train_throughput.py OUT [--batch-size 4] [--steps 10] [--rounds 2]
       [--compile]
(--compile: each block torch.compiled, as `act24 train --compile`, for both modes; the JSON's name gets
the suffix _compiled)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from act24.bench.common import header, write_result
from act24.bench.gpu_sampler import GpuSampler
from act24.model import DecoderLM, preset


def tokens_per_s(model, opt, batch, steps: int, warmup: int = 3) -> tuple[float, dict]:
    """Tokens/s over `steps` training steps after `warmup` untimed ones, and the GPU's clock and power
    over the timed steps."""
    x, y = batch

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, y)[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    with GpuSampler() as gpu:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return steps * x.numel() / elapsed, gpu.summary()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile each block (fullgraph)")
    args = p.parse_args()
    cfg = preset("1b", ffn="relu2")
    torch.manual_seed(0)
    model = DecoderLM(cfg).cuda()
    if args.compile:
        for block in model.blocks:
            block.compile(fullgraph=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch_size, cfg.seq_len + 1), device="cuda", generator=g)
    batch = tokens[:, :-1], tokens[:, 1:]
    for mode in ("dense", "sparse"):  # untimed: compiles, algorithm searches, and the clock after the set-up
        model.set_sparse(mode == "sparse")
        tokens_per_s(model, opt, batch, args.steps)
    result, gpu = {"dense": [], "sparse": []}, {"dense": [], "sparse": []}
    for _ in range(args.rounds):
        for mode in ("dense", "sparse", "sparse", "dense"):
            model.set_sparse(mode == "sparse")
            rate, clock = tokens_per_s(model, opt, batch, args.steps)
            result[mode].append(rate)
            gpu[mode].append(clock)
            print(mode, rate, clock, flush=True)
    dense, sparse = statistics.median(result["dense"]), statistics.median(result["sparse"])
    row = {"config": f"1b: d={cfg.d_model}, hidden={cfg.hidden}, {cfg.n_layers} layers, seq {cfg.seq_len}, "
                     f"batch {args.batch_size}, {model.num_params() / 1e9:.2f}B params, bf16 autocast, "
                     f"{'blocks compiled' if args.compile else 'eager'}",
           "dense_tokens_per_s": dense, "sparse_tokens_per_s": sparse, "speedup": sparse / dense,
           "dense_runs_tokens_per_s": result["dense"], "sparse_runs_tokens_per_s": result["sparse"],
           "dense_runs_gpu": gpu["dense"], "sparse_runs_gpu": gpu["sparse"]}
    write_result(args.out, "train_throughput_compiled" if args.compile else "train_throughput",
                 {**header(), "rows": [row]})
    print(row)


if __name__ == "__main__":
    main()
