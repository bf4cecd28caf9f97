"""Ways to pick the training backward's dense features (the densest 5% by kept count, ties to the lower
index) in one process: `reference.densest_features` as it was (64-bit keys, indices sorted), the
training op's `dense_feature_selection` (32-bit keys, the indices as a set), and other ways; GPU time
(alternated medians) and host issue time per call, at the two training shapes' hidden sizes. Each way
is checked against the definition first (same set; same order where it claims one). Then the FFN
training step with the old and the new selection (and compiled dense), alternated, at T=16384 and
d=2048 and 4096. Writes OUT/densest_features_ab.json.

Usage: PYTHONPATH=src python scripts/ab_densest_features.py OUT
"""

from __future__ import annotations

import argparse
import contextlib
from unittest import mock

import torch

from act24 import reference as ref
from act24.bench.common import alternating_medians, header, host_issue_ms, write_result
from act24.bench.ffn_train import step_ab
from act24.ops import sparse_training_ops
from act24.reference.selection import density_keys

T = 16384  # tokens: the largest count a feature can have


def topk32_by_density(counts, n):
    return density_keys(counts, T).topk(n, sorted=True).indices


def sort32_sorted_after(counts, n):
    return density_keys(counts, T).sort(descending=True).indices[:n].sort().values


def topk32_mask(counts, n):
    mask = torch.zeros(counts.numel(), dtype=torch.bool, device=counts.device)
    mask[density_keys(counts, T).topk(n, sorted=False).indices] = True
    return torch.nonzero_static(mask, size=n).squeeze(1)


WAYS = {"adopted": (lambda counts, n: sparse_training_ops.dense_feature_selection(counts, n, T), "set"),
        "int32_keys_sorted": (lambda counts, n: ref.densest_features(counts, n, max_count=T), "sorted"),
        "topk32_by_density": (topk32_by_density, "set"), "sort32_sorted_after": (sort32_sorted_after, "sorted"),
        "topk32_mask": (topk32_mask, "sorted")}


def old_selection():
    """The training op's dense features chosen as before (64-bit keys, indices sorted), for a whole step."""
    return mock.patch.object(sparse_training_ops, "dense_feature_selection",
                             lambda kept, n, tokens: ref.densest_features(kept, n))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    args = p.parse_args()
    rows = []
    for h in (8192, 16384):
        n = ref.dense_feature_count(h, 0.05)
        g = torch.Generator(device="cuda").manual_seed(h)
        # few distinct counts: many ties at the boundary, where the tie rule decides
        counts = torch.randint(0, 64, (h,), device="cuda", generator=g, dtype=torch.int32) * (T // 64)
        want = ref.densest_features(counts, n)
        fns = {"before": lambda: ref.densest_features(counts, n)}
        row = {"H": h, "num_dense": n, "agrees": {}}
        for name, (way, order) in WAYS.items():
            got = way(counts, n)
            same = torch.equal(got, want) if order == "sorted" else torch.equal(got.sort().values, want)
            row["agrees"][name] = same
            if same:
                fns[name] = (lambda way=way: way(counts, n))
        row["gpu_us"] = {k: v * 1e3 for k, v in alternating_medians(fns, rounds=5).items()}
        row["host_us"] = {k: host_issue_ms(f, calls=200) * 1e3 for k, f in fns.items()}
        print(row, flush=True)
        rows.append(row)
    steps = []
    for shape in ((T, 2048, 8192), (T, 4096, 16384)):
        steps.append(step_ab(*shape, {"before": old_selection, "adopted": contextlib.nullcontext}))
        print(steps[-1], flush=True)
    write_result(args.out, "densest_features_ab", {**header(), "T": T, "rows": rows, "training_step": steps})


if __name__ == "__main__":
    main()
