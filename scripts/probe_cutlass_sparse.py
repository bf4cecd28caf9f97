"""Is CUTLASS's sm90 2:4 GEMM faster than cuSPARSELt's? Dense (cuBLAS), cuSPARSELt (act24's planned
calls, algorithm searched) and CUTLASS configurations (scripts/cutlass_sparse_probe/sm90_sparse_gemm.cu)
timed alternating in one process, on the FFN's 2:4 GEMM shapes:

  forward GEMM2, d=4096 / d=2048:  A [T, H] 2:4 @ W2.T, B K-major (W2 as stored)
  weight gradient, d=4096:         A [H, T] 2:4 @ x[perm] [T, d], B N-major

A is random bf16 with the 2 largest magnitudes of every 4 kept. Each CUTLASS result is compared with
the dense product of the same A (relative error). Writes OUT/cutlass_sparse_gemm.json.

Usage: PYTHONPATH=src python scripts/probe_cutlass_sparse.py OUT path/to/libsm90_sparse_gemm.so
"""

import ctypes
import sys

import torch

from act24.bench.common import alternating_medians, header, write_result
from act24.gemm import cusparselt

K_MAJOR, N_MAJOR = (0, 1, 2, 3), (4, 5)
CASES = [  # (name, M, N, K, B layout, CUTLASS configs)
    ("forward_d4096", 16384, 4096, 16384, "k_major", K_MAJOR),
    ("forward_d2048", 16384, 2048, 8192, "k_major", K_MAJOR),
    ("weight_gradient_d4096", 16384, 4096, 16384, "n_major", N_MAJOR),
]


def load(path: str):
    lib = ctypes.CDLL(path)
    i64p = ctypes.POINTER(ctypes.c_int64)
    vp, i = ctypes.c_void_p, ctypes.c_int
    lib.sm90_sparse_sizes.argtypes = [i, i, i, i, i64p, i64p]
    lib.sm90_sparse_workspace.argtypes = [i, i, i, i]
    lib.sm90_sparse_workspace.restype = ctypes.c_int64
    lib.sm90_sparse_compress.argtypes = [i, vp, vp, vp, vp, ctypes.c_int64, i, i, i, vp]
    lib.sm90_sparse_gemm.argtypes = [i, vp, vp, vp, vp, vp, i, i, i, vp]
    return lib


def two_of_four(M: int, K: int) -> torch.Tensor:
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    groups = a.view(M, K // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.abs().topk(2, dim=2).indices, True)
    return (groups * keep).view(M, K)


def cutlass_runner(lib, config: int, a: torch.Tensor, b_kn: torch.Tensor, k_major: bool):
    M, K = a.shape
    N = b_kn.shape[1]
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    a_bytes, e_bytes = ctypes.c_int64(), ctypes.c_int64()
    if lib.sm90_sparse_sizes(config, M, N, K, ctypes.byref(a_bytes), ctypes.byref(e_bytes)):
        raise RuntimeError("sizes failed")
    a_comp = torch.empty(a_bytes.value, dtype=torch.uint8, device="cuda")
    e = torch.zeros(e_bytes.value, dtype=torch.uint8, device="cuda")
    work = torch.empty(max(1 << 20, lib.sm90_sparse_workspace(config, M, N, K)), dtype=torch.uint8, device="cuda")
    status = lib.sm90_sparse_compress(config, a.data_ptr(), a_comp.data_ptr(), e.data_ptr(), work.data_ptr(),
                                      work.numel(), M, N, K, stream)
    if status:
        raise RuntimeError(f"compress returned {status}")
    b = b_kn.t().contiguous() if k_major else b_kn.contiguous()  # K-major: [N, K] rows
    d = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)

    def run():
        status = lib.sm90_sparse_gemm(config, a_comp.data_ptr(), e.data_ptr(), b.data_ptr(), d.data_ptr(),
                                      work.data_ptr(), M, N, K, stream)
        if status:
            raise RuntimeError(f"gemm returned {status}")
        return d
    return run


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def main() -> None:
    out, lib_path = sys.argv[1:3]
    lib = load(lib_path)
    rows = []
    for name, M, N, K, layout, configs in CASES:
        torch.manual_seed(0)
        a = two_of_four(M, K)
        k_major = layout == "k_major"
        b_kn = torch.randn(N, K, device="cuda", dtype=torch.bfloat16).t() if k_major else \
            torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        ref = a.float() @ b_kn.float()
        packed = torch._cslt_compress(a)
        fns = {"dense": lambda: a @ b_kn, "cusparselt": lambda: cusparselt.sparse_mm(packed, b_kn, M)}
        row = {"case": name, "M": M, "N": N, "K": K, "b_layout": layout, "errors": {}}
        for c in configs:
            try:
                fn = cutlass_runner(lib, c, a, b_kn, k_major)
                row[f"cutlass{c}_rel_err"] = rel_err(fn(), ref)
                fns[f"cutlass{c}"] = fn
            except RuntimeError as e:
                row["errors"][f"cutlass{c}"] = str(e)
        row["cusparselt_rel_err"] = rel_err(fns["cusparselt"](), ref)
        row["dense_rel_err"] = rel_err(fns["dense"](), ref)
        times = alternating_medians(fns, rounds=2)
        row.update({f"{k}_ms": v for k, v in times.items()})
        row.update({f"{k}_speedup": times["dense"] / v for k, v in times.items() if k != "dense"})
        print(row, flush=True)
        rows.append(row)
    write_result(out, "cutlass_sparse_gemm", {**header(), "rounds": 2, "rows": rows})


if __name__ == "__main__":
    main()
