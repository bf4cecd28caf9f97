"""Does GEMM1 with the packer as its epilogue, on CUTLASS's sm90 main loops, beat cuBLAS then act24's
packer? (scripts/fused_gemm_pack_probe/gemm_relu2_pack.cu)

1. Exactness: integer-valued x and W1 (every product and sum exact in fp32, so the accumulation order
   cannot matter), with all-zero rows, an Inf in x and a NaN in W1, on odd and large shapes: each
   fused configuration's bytes must equal act24's packer run on y1 = bf16(x @ W1.T) computed in fp32.
2. Realistic inputs (90% zeros after ReLU², as in `act24 bench ffn`): the fused and unfused packed
   operands, unpacked, against the reference (relative L2; only rounding of the accumulation differs).
3. Timing, alternated in one process: cuBLAS GEMM1 alone and with the packer, CUTLASS's GEMM1 with a
   plain epilogue, each fused configuration; then the whole forward: compiled dense, act24 as
   shipped, and the fused GEMM1 + cuSPARSELt GEMM2.

Usage: PYTHONPATH=src python scripts/probe_fused_gemm_pack.py OUT path/to/libgemm_relu2_pack.so [--target-only]
"""

import argparse
import ctypes

import torch

from act24.bench.common import alternating_medians, header, write_result
from act24.bench.ffn_forward import compiled_baseline_and_operands, realistic_operands
from act24.ffn.fast_forward import sparse_forward
from act24.gemm import cusparselt
from act24.kernels.sparsify_pack import sparsify_pack
from act24.reference.cusparselt_layout import buffer_shape, unpack_dense
from act24.reference.selection import masked_activation

EXACT_SHAPES = [(128, 128, 64), (192, 320, 136), (1024, 4096, 512), (4096, 16384, 4096)]  # (M, N, K)
TIMED_SHAPES = [(16384, 16384, 4096), (16384, 8192, 2048), (16384, 32768, 8192)]  # (T, H, d)


def load(path: str):
    lib = ctypes.CDLL(path)
    lib.act24_fused_config_name.restype = ctypes.c_char_p
    lib.act24_fused_config_name.argtypes = [ctypes.c_int]
    vp, i = ctypes.c_void_p, ctypes.c_int
    lib.act24_fused_gemm.argtypes = [i, vp, vp, vp, i, i, i, i, vp]
    configs = {}
    c = 0
    while (name := lib.act24_fused_config_name(c)) is not None:
        configs[c] = name.decode()
        c += 1
    return lib, configs


def runner(lib, config: int, x: torch.Tensor, w1: torch.Tensor, fused: bool, swizzle: int = 1):
    M, K = x.shape
    N = w1.shape[0]
    out = torch.empty(buffer_shape(M, N)[0] if fused else (M, N), dtype=x.dtype, device=x.device)
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def run():
        status = lib.act24_fused_gemm(config, x.data_ptr(), w1.data_ptr(), out.data_ptr(), M, N, K, swizzle, stream)
        if status:
            raise RuntimeError(f"config {config} returned {status}")
        return out
    return run


def integer_inputs(M: int, N: int, K: int):
    g = torch.Generator(device="cuda").manual_seed(M + N + K)
    x = torch.randint(-3, 4, (M, K), device="cuda", generator=g).to(torch.bfloat16)
    w1 = torch.randint(-2, 3, (N, K), device="cuda", generator=g).to(torch.bfloat16)
    x[1] = 0  # all-zero groups
    x[2, 5] = float("inf")  # Inf (and NaN where W1's entry is 0) in row 2
    w1[7, 3] = float("nan")  # a NaN column
    x[3] = x[4]  # equal rows: ties across rows are irrelevant, within groups they abound anyway
    return x, w1


def check_exact(lib, configs) -> list[dict]:
    rows = []
    for M, N, K in EXACT_SHAPES:
        x, w1 = integer_inputs(M, N, K)
        y1 = (x.float() @ w1.float().t()).to(torch.bfloat16)
        expected = sparsify_pack(y1, count=False).packed
        for c, name in configs.items():
            if not name.startswith("fused"):
                continue
            got = runner(lib, c, x, w1, fused=True)()
            torch.cuda.synchronize()
            a, b = got.view(torch.uint8).reshape(-1), expected.view(torch.uint8).reshape(-1)
            _, defined = buffer_shape(M, N)
            diff = (a[:defined] != b[:defined])
            rows.append({"M": M, "N": N, "K": K, "config": name, "bytes_equal": not diff.any().item(),
                         "differing_value_bytes": int(diff[: M * N].sum()),
                         "differing_metadata_bytes": int(diff[M * N:].sum())})
            print(rows[-1], flush=True)
    return rows


def check_realistic(lib, configs, T=4096, d=4096, H=16384) -> list[dict]:
    x, w1, _ = realistic_operands(T, d, H)
    y1 = x @ w1.t()
    reference = masked_activation(torch.relu(y1.float()) ** 2)
    unfused = unpack_dense(sparsify_pack(y1, count=False).packed, T, H).float()
    rows = [{"config": "cuBLAS + packer",
             "rel_err": ((unfused - reference).norm() / reference.norm()).item()}]
    for c, name in configs.items():
        if name.startswith("fused"):
            got = unpack_dense(runner(lib, c, x, w1, fused=True)(), T, H).float()
            rows.append({"config": name, "rel_err": ((got - reference).norm() / reference.norm()).item(),
                         "mask_agreement": ((got != 0) == (unfused != 0)).float().mean().item()})
    for r in rows:
        print(r, flush=True)
    return rows


def time_shape(lib, configs, T: int, H: int, d: int) -> dict:
    compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
    w2t = w2.t()
    fused = [c for c, n in configs.items() if n.startswith("fused")]
    # every configuration at swizzle 8 (grouped rasterization; at 1 the B operand is re-read from DRAM
    # by every wave), then the best fused one over the scheduler's settings
    fns = {"cublas_gemm1": lambda: x @ w1.t(),
           "cublas_gemm1_then_pack": lambda: sparsify_pack(x @ w1.t(), count=False)}
    for c, name in configs.items():
        fns[name] = runner(lib, c, x, w1, fused=c in fused, swizzle=8)
    gemm_times = alternating_medians(fns)
    best = min(fused, key=lambda c: gemm_times[configs[c]])
    settings = {f"swizzle {sw}, raster {raster}": sw | (r << 8)
                for sw in (2, 4, 8) for r, raster in ((1, "along M"), (2, "along N"))}
    setting_times = alternating_medians({k: runner(lib, best, x, w1, True, v) for k, v in settings.items()})
    best_setting = min(setting_times, key=setting_times.get)
    fused_run = runner(lib, best, x, w1, True, settings[best_setting])
    forward = {"compiled_dense": lambda: compiled(x, w1, w2),
               "act24_unfused": lambda: sparse_forward(x, w1, w2, count=False),
               "act24_fused": lambda: cusparselt.sparse_mm(fused_run(), w2t, T)}
    forward_times = alternating_medians(forward)
    row = {"T": T, "d": d, "H": H, "gemm1_ms": gemm_times, "best_fused": configs[best],
           "best_fused_settings_ms": setting_times, "best_setting": best_setting, "forward_ms": forward_times,
           "speedup_unfused": forward_times["compiled_dense"] / forward_times["act24_unfused"],
           "speedup_fused": forward_times["compiled_dense"] / forward_times["act24_fused"]}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("library")
    parser.add_argument("--target-only", action="store_true", help="time T=16384, d=4096, H=16384 only")
    args = parser.parse_args()
    lib, configs = load(args.library)
    result = {**header(), "configs": configs}
    result["exact"] = check_exact(lib, configs)
    result["realistic"] = check_realistic(lib, configs)
    write_result(args.out, "fused_gemm_pack", result)
    shapes = TIMED_SHAPES[:1] if args.target_only else TIMED_SHAPES
    result["timed"] = [time_shape(lib, configs, *shape) for shape in shapes]
    write_result(args.out, "fused_gemm_pack", result)


if __name__ == "__main__":
    main()
