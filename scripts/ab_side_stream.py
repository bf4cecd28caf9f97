"""The training backward with its dense-feature selection and token gathers on a side stream (beside
dy2's GEMM and the packer) against all of it on one stream: the gradients of both (bit for bit), then
the FFN training step under each (and compiled dense), alternated in one process, at T=16384 and
d=2048 and 4096. Writes OUT/backward_side_stream_ab.json.

Usage: PYTHONPATH=src python scripts/ab_side_stream.py OUT
"""

from __future__ import annotations

import argparse
import contextlib
from unittest import mock

import torch

from act24.bench.common import header, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.bench.ffn_train import DENSE_FRACTION, act24_train_ffn, step_ab
from act24.ops import sparse_training_ops
from act24.reference import dense_feature_count

T = 16384


def one_stream():
    return mock.patch.object(sparse_training_ops, "SIDE_STREAM", False)


def same_gradients(d: int, H: int) -> bool:
    x, w1, w2 = realistic_operands(T, d, H)
    dy = torch.randn_like(x)
    forward = act24_train_ffn(dense_feature_count(H, DENSE_FRACTION))
    grads = []
    for arm in (one_stream, contextlib.nullcontext):
        xs, w1s, w2s = (t.detach().requires_grad_() for t in (x, w1, w2))
        with arm():
            forward(xs, w1s, w2s).backward(dy)
        grads.append([t.grad for t in (xs, w1s, w2s)])
    return all(torch.equal(a, b) for a, b in zip(*grads))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    args = p.parse_args()
    rows = []
    for d, H in ((2048, 8192), (4096, 16384)):
        row = {"same_gradients": same_gradients(d, H),
               **step_ab(T, d, H, {"one_stream": one_stream, "side_stream": contextlib.nullcontext})}
        print(row, flush=True)
        rows.append(row)
    write_result(args.out, "backward_side_stream_ab", {**header(), "rows": rows})


if __name__ == "__main__":
    main()
