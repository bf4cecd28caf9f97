"""Does the backward packer wait on its row gathers? At the target shape (T=16384, d=4096, H=16384,
bf16, realistic input), timed alternating in one process, each at the default launch:

  token order:       dy2 rows in token order (gathered through perm, like a's rows)
  dy2 in perm order: dy2 rows in perm order (as dy[perm] @ W2 gives them), read contiguously (a's rows still gathered);
                     its bytes are compared with token order's
  identity perm:     no gathers at all (perm = arange; other groups, so other bytes): the ceiling
                     of reading every row contiguously

Usage: PYTHONPATH=src python scripts/probe_backward_order.py OUT
"""

import dataclasses
import sys

import torch

from act24 import reference as ref
from act24.bench import ffn_train
from act24.bench.common import ROUNDS, alternating_medians, header, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.kernels.backward_pack import backward_pack

T, d, H = 16384, 4096, 16384


def main() -> None:
    out = sys.argv[1]
    x, w1, w2 = realistic_operands(T, d, H)
    dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
    num_dense = ref.dense_feature_count(H, ffn_train.DENSE_FRACTION)
    _, packed, dy2, perm, dense = ffn_train.backward_pack_inputs(x, w1, w2, dy, num_dense)
    dy2_perm = dy2[perm].contiguous()  # the rows dy[perm] @ W2 gives
    identity = torch.arange(T, device="cuda")
    cases = {
        "token_order": lambda: backward_pack(packed.packed, dy2, perm, dense),
        "dy2_in_perm_order": lambda: backward_pack(packed.packed, dy2_perm, perm, dense, dy2_in_perm_order=True),
        "identity_perm": lambda: backward_pack(packed.packed, dy2, identity, dense),
    }
    a, b = cases["token_order"](), cases["dy2_in_perm_order"]()
    identical = {f.name: torch.equal(getattr(a, f.name).view(torch.int16), getattr(b, f.name).view(torch.int16))
                 for f in dataclasses.fields(a)}
    times = alternating_medians(cases)
    result = {**header(), "shape": {"T": T, "d": d, "H": H}, "rounds": ROUNDS, "identical": identical,
              **{f"{k}_ms": v for k, v in times.items()}}
    print(result, flush=True)
    write_result(out, "backward_pack_dy2_order", result)


if __name__ == "__main__":
    main()
