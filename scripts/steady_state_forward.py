"""Back-to-back timing (events around 20 calls) vs do_bench medians, dense vs sparse, one shape.

python scripts/steady_state_forward.py OUTDIR [T d H]
"""

import json
import sys

import torch

from act24 import functional
from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.reference import dense_ffn

T, d, H = (int(v) for v in sys.argv[2:5]) if len(sys.argv) >= 5 else (16384, 4096, 16384)
x, w1, w2 = realistic_operands(T, d, H)
compiled = torch.compile(dense_ffn)
fns = {"dense_eager": lambda: dense_ffn(x, w1, w2), "dense_compiled": lambda: compiled(x, w1, w2),
       "sparse": lambda: functional.sparse_ffn_forward(x, w1, w2)}
res = {}
with torch.inference_mode():
    for name, fn in fns.items():
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        loops = []
        for _ in range(5):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(20):
                fn()
            e.record()
            e.synchronize()
            loops.append(s.elapsed_time(e) / 20)
        res[name] = {"back_to_back_ms": sorted(loops)[2], "do_bench_median_ms": median_ms(fn)}
print(json.dumps(res, indent=1))
write_result(sys.argv[1], "steady_state_forward", {**header(), "T": T, "d": d, "H": H, "timings": res})
