"""Both packers at one shape, for a profiler: registers, spills and shared memory of each compiled
kernel, then 3 timed launches each (run under `ncu -k regex:_pack_kernel` for hardware counters).

Usage: PYTHONPATH=src python scripts/profile_packers.py [T d H]
"""

import sys

import torch
import triton.testing

from act24 import reference as ref
from act24.bench.ffn_forward import realistic_operands
from act24.kernels import backward_pack as bp
from act24.kernels import sparsify_pack as sp

T, d, H = (int(v) for v in sys.argv[1:4]) if len(sys.argv) >= 4 else (16384, 4096, 16384)
x, w1, w2 = realistic_operands(T, d, H)
y1 = x @ w1.t()
dy2 = torch.randn(T, d, device="cuda", dtype=x.dtype) @ w2
perm = ref.cached_token_permutation(T, 0, x.device)
for _ in range(3):
    packed = sp.sparsify_pack(y1)
    dense = ref.densest_features(packed.kept_per_feature, ref.dense_feature_count(H, 0.05))
    bp.backward_pack(packed.packed, dy2, perm, dense)
torch.cuda.synchronize()
for name, fn in (("sparsify_pack", sp._sparsify_pack_kernel), ("backward_pack", bp._backward_pack_kernel)):
    try:
        for kernel in fn.device_caches[torch.cuda.current_device()][0].values():
            print(f"{name}: regs={kernel.n_regs} spills={kernel.n_spills} shared={kernel.metadata.shared} "
                  f"warps={kernel.metadata.num_warps}")
    except Exception as e:  # the cache layout is Triton-internal
        print(f"{name}: no compile metadata ({type(e).__name__}: {e})")
print("sparsify_pack ms", triton.testing.do_bench(lambda: sp.sparsify_pack(y1), return_mode="median"))
print("backward_pack ms", triton.testing.do_bench(lambda: bp.backward_pack(packed.packed, dy2, perm, dense),
                                                 return_mode="median"))
