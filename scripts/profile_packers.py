"""Both packers at one shape, for a profiler: registers, spills and shared memory of each compiled
kernel, then their medians (run under `ncu -k regex:_pack_kernel` for hardware counters).

Usage: PYTHONPATH=src python scripts/profile_packers.py [T d H]
"""

import sys

import torch

from act24 import reference as ref
from act24.bench import ffn_train
from act24.bench.common import median_ms
from act24.bench.ffn_forward import realistic_operands
from act24.kernels import backward_pack as bp
from act24.kernels import sparsify_pack as sp

T, d, H = (int(v) for v in sys.argv[1:4]) if len(sys.argv) >= 4 else (16384, 4096, 16384)
x, w1, w2 = realistic_operands(T, d, H)
dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
y1, packed, dy2, perm, dense = ffn_train.backward_pack_inputs(x, w1, w2, dy, ref.dense_feature_count(H, ffn_train.DENSE_FRACTION))
for _ in range(3):
    bp.backward_pack(sp.sparsify_pack(y1).packed, dy2, perm, dense)
torch.cuda.synchronize()
for name, fn in (("sparsify_pack", sp._sparsify_pack_kernel), ("backward_pack", bp._backward_pack_kernel)):
    try:
        for kernel in fn.device_caches[torch.cuda.current_device()][0].values():
            print(f"{name}: regs={kernel.n_regs} spills={kernel.n_spills} shared={kernel.metadata.shared} "
                  f"warps={kernel.metadata.num_warps}")
    except Exception as e:  # the cache layout is Triton-internal
        print(f"{name}: no compile metadata ({type(e).__name__}: {e})")
print("sparsify_pack ms", median_ms(lambda: sp.sparsify_pack(y1)))
print("backward_pack ms", median_ms(lambda: bp.backward_pack(packed.packed, dy2, perm, dense)))
