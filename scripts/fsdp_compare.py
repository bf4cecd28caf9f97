"""Compare a 1-GPU and an N-GPU `act24 train` run (same global batch): OUT/fsdp.json.

Usage: python scripts/fsdp_compare.py OUT RUN_1GPU RUN_NGPU NGPUS
loss_match: every logged training loss within 2% of the other run's (bf16 runs on different
reduction orders drift apart slowly; 2% is well inside a seed-to-seed spread at these steps).
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))
from act24.bench.common import header, write_result  # noqa: E402
from act24.train.plots import read_metrics  # noqa: E402


def main() -> None:
    out, one, many, ngpus = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
    a = {r["step"]: r for r in read_metrics(one / "metrics.jsonl") if "loss" in r}
    b = {r["step"]: r for r in read_metrics(many / "metrics.jsonl") if "loss" in r}
    steps = sorted(set(a) & set(b))
    diffs = [abs(a[s]["loss"] - b[s]["loss"]) for s in steps]
    rel = [d / a[s]["loss"] for d, s in zip(diffs, steps)]
    tail = steps[len(steps) // 2:]
    tps1 = statistics.median(a[s]["tokens_per_s"] for s in tail)
    tpsn = statistics.median(b[s]["tokens_per_s"] for s in tail)
    val = lambda run: [r["val_loss"] for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r][-1]  # noqa: E731
    payload = {**header(), "gpus": ngpus, "loss_match": max(rel) <= 0.02, "max_abs_loss_diff": max(diffs),
               "max_rel_loss_diff": max(rel), "compared_steps": len(steps),
               "val_loss_1gpu": val(one), "val_loss_ngpu": val(many),
               "tokens_per_s_1gpu": tps1, "tokens_per_s_ngpu": tpsn, "tokens_per_s_per_gpu_ngpu": tpsn / ngpus,
               "first_losses": [[s, a[s]["loss"], b[s]["loss"]] for s in steps[:5]]}
    print(json.dumps(payload, indent=2))
    write_result(out, "fsdp", payload)


if __name__ == "__main__":
    main()
