"""Check src/act24/reference/cusparselt_layout.py against torch._cslt_compress on the GPU.

Usage: python3 scripts/verify_cslt_layout.py [OUTDIR]

For each shape and dtype (bf16, fp16):
  exact:  random 2:4 (exactly 2 non-zeros per group): to_cusparselt_layout(values,
          indices) == _cslt_compress(dense) on the S defined bytes, and
          from_cusparselt_layout(_cslt_compress(dense)) == (values, indices);
  relu2:  relu(x - 0.5)^2 pruned to <= 2 per group (many groups with 0 / 1
          non-zeros): compress_reference(dense) == _cslt_compress(dense);
  mm:     _cslt_sparse_mm(our buffer, B) == _cslt_sparse_mm(torch's buffer, B)
          bitwise, and close to dense A @ B.
With OUTDIR it writes OUTDIR/verify.json and the tiny relu^2 golden fixtures
used by tests/test_cusparselt_layout.py (copy them to tests/data/).
"""

import json
import os
import sys
import time

import torch

from act24.reference import cusparselt_layout as L

PAIRS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
SHAPES = [(64, 32768), (32768, 64), (16384, 4096), (4096, 16384), (32768, 8192), (8192, 32768),
          (1024, 2048), (2048, 1024), (256, 768), (80, 4096), (1008, 2048), (4112, 1024),
          (16, 64), (48, 192)]
DEV = os.environ.get("VERIFY_DEVICE", "cuda")  # "cpu" only for dry runs with a patched torch
MM_SHAPES = {(1024, 2048), (2048, 1024), (16384, 4096), (64, 32768), (80, 4096), (1008, 2048)}


def bytes_of(t):
    return t.contiguous().view(torch.uint8).reshape(-1)


def check(M, K, dtype, gen):
    dev = DEV
    res = dict(M=M, K=K, dtype=str(dtype).replace("torch.", ""))
    shp, S = L.buffer_shape(M, K)
    # exact 2:4
    idx = PAIRS[torch.randint(0, 6, (M * K // 4,), generator=gen)].reshape(M, K // 2).to(dev)
    vals = torch.randn(M, K // 2, device=dev).to(dtype)
    vals = torch.where(vals == 0, torch.ones_like(vals), vals)
    dense = torch.zeros(M, K // 4, 4, dtype=dtype, device=dev)
    dense.scatter_(2, idx.reshape(M, K // 4, 2), vals.reshape(M, K // 4, 2))
    dense = dense.reshape(M, K)
    ref = torch._cslt_compress(dense)
    ours = L.to_cusparselt_layout(vals, idx)
    res["shape_ok"] = tuple(ref.shape) == tuple(ours.shape) == shp
    res["tail_bytes"] = ref.numel() * 2 - S
    res["exact_mismatch_bytes"] = int((bytes_of(ref)[:S] != bytes_of(ours)[:S]).sum())
    v2, i2 = L.from_cusparselt_layout(ref, M, K)
    res["from_ok"] = bool(torch.equal(bytes_of(v2), bytes_of(vals)) and torch.equal(i2.long(), idx.long()))
    if (M, K) in MM_SHAPES:
        B = torch.randn(K, 256, device=dev).to(dtype)
        c_ref = torch._cslt_sparse_mm(ref, B)
        c_ours = torch._cslt_sparse_mm(ours, B)
        d = dense.float() @ B.float()
        res["mm_bitwise_equal"] = bool(torch.equal(c_ref, c_ours))
        res["mm_rel_err"] = float((c_ours.float() - d).norm() / d.norm())
    del ref, ours, dense
    # relu^2 activations pruned to <= 2 per group
    x = torch.relu(torch.randn(M, K, device=dev) - 0.5) ** 2
    g = x.reshape(M, K // 4, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(2, dim=-1).indices, True)
    a = (g * keep).reshape(M, K).to(dtype)
    nnz = (a.reshape(M, K // 4, 4) != 0).sum(-1)
    res["relu2_groups_nnz_0_1_2"] = [round(float((nnz == n).float().mean()), 3) for n in range(3)]
    ref = torch._cslt_compress(a)
    ours = L.compress_reference(a)
    res["relu2_mismatch_bytes"] = int((bytes_of(ref)[:S] != bytes_of(ours)[:S]).sum())
    if (M, K) in MM_SHAPES:
        B = torch.randn(K, 256, device=dev).to(dtype)
        res["relu2_mm_bitwise_equal"] = bool(torch.equal(torch._cslt_sparse_mm(ref, B),
                                                         torch._cslt_sparse_mm(ours, B)))
    return res


def save_goldens(outdir):
    """Tiny fixtures for the CPU tests: relu^2 inputs (groups with 0/1/2 non-zeros)."""
    gen = torch.Generator().manual_seed(1)
    for M, K, dt in ((64, 128, torch.bfloat16), (48, 64, torch.float16)):
        x = torch.relu(torch.randn(M, K, generator=gen) - 0.5) ** 2
        g = x.reshape(M, K // 4, 4)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(2, dim=-1).indices, True)
        a = (g * keep).reshape(M, K).to(dt)
        _, S = L.buffer_shape(M, K)
        c = torch._cslt_compress(a.to(DEV)).cpu()
        name = "cslt_golden_relu2_%dx%d_%s.pt" % (M, K, str(dt).replace("torch.", ""))
        torch.save(dict(M=M, K=K, dtype=str(dt).replace("torch.", ""), dense=a.view(torch.int16),
                        compressed=bytes_of(c)[:S].clone(), shape=tuple(c.shape),
                        source=env_str()), os.path.join(outdir, name))


def env_str():
    if DEV != "cuda":
        return "dry run"
    return "%s, torch %s, cuSPARSELt %s" % (torch.cuda.get_device_name(), torch.__version__,
                                           torch.backends.cusparselt.version())


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else None
    env = dict(torch=torch.__version__)
    if DEV == "cuda":
        env.update(gpu=torch.cuda.get_device_name(), cusparselt=torch.backends.cusparselt.version())
    print(env, flush=True)
    gen = torch.Generator().manual_seed(0)
    results, all_ok = [], True
    for M, K in SHAPES:
        for dt in (torch.bfloat16, torch.float16):
            t0 = time.time()
            try:
                r = check(M, K, dt, gen)
                ok = (r["shape_ok"] and r["exact_mismatch_bytes"] == 0 and r["from_ok"]
                      and r["relu2_mismatch_bytes"] == 0 and r.get("mm_bitwise_equal", True)
                      and r.get("relu2_mm_bitwise_equal", True))
            except Exception as e:  # keep going: report every shape
                r, ok = dict(M=M, K=K, dtype=str(dt), error=repr(e)[:300]), False
            r["ok"], r["secs"] = ok, round(time.time() - t0, 2)
            all_ok &= ok
            results.append(r)
            print(json.dumps(r), flush=True)
            if DEV == "cuda":
                torch.cuda.empty_cache()
    print("ALL OK" if all_ok else "MISMATCHES", flush=True)
    if outdir:
        os.makedirs(outdir, exist_ok=True)
        save_goldens(outdir)
        with open(os.path.join(outdir, "verify.json"), "w") as f:
            json.dump(dict(env=env, results=results, all_ok=all_ok), f, indent=1)


if __name__ == "__main__":
    main()
