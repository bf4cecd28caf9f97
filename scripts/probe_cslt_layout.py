"""Probe the byte layout of torch._cslt_compress (cuSPARSELt) on the current GPU.

Usage: python3 scripts/probe_cslt_layout.py OUTDIR [--grid] [--fake]

Writes OUTDIR/{probes,medium,big_a,big_b}.pt (or with --grid: the shape scan,
OUTDIR/grid_maps.pt; run it as its own process).  For every probed shape
(M, K) it recovers, from value-encoded probes, two maps:

  vinv[k] = int16 slot of the buffer that holds kept value k, where
            k = r * (K/2) + 2 * group_in_row + j (j = 0: lower position)
  ginv[g] = nibble position (byte * 2 + (0 low | 1 high)) that holds the 4-bit
            metadata of group g = r * (K/4) + group_in_row

Values: each kept value's bit pattern encodes 15 bits of k (two probes -> 30
bits).  Metadata: "bit-plane" probes, group g uses pattern (0,1) or (2,3)
according to bit b of g, so the nibble sequence at a position spells g.
A random-pattern / random-value probe then checks the maps (on the GPU).
--fake runs on the CPU with a made-up compressor (tests this script only).
"""

import math
import os
import sys
import time
import traceback

import torch

PAIRS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
FAKE = "--fake" in sys.argv
DEV = "cpu" if FAKE else "cuda"
LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


# ----------------------------------------------------------------------------- helpers
def to_i16(x32):
    """int32/int64 holding 0..65535 -> int16 with the same bits."""
    x32 = x32.to(torch.int32)
    return torch.where(x32 >= 32768, x32 - 65536, x32).to(torch.int16)


def u16(x16):
    return x16.to(torch.int32) & 0xFFFF


def enc_ids(n):
    """n in [0, 2^15) -> int16 bits of a normal, nonzero bf16 AND fp16 number."""
    n = n.to(torch.int32)
    return to_i16(0x0400 + (n & 0x3FFF) + ((n >> 14) & 1) * 0x8000)


def dec_ids(raw16):
    u = u16(raw16)
    b = u & 0x7FFF
    valid = (b >= 0x0400) & (b < 0x4400)
    return ((b - 0x0400) & 0x3FFF) | ((u >> 15) << 14), valid


def dense_from(vals16, idx, M, K):
    """vals16/idx [M, K/2] (idx: position 0..3 inside the group) -> dense int16 [M, K]."""
    A = torch.zeros(M, K // 4, 4, dtype=torch.int16, device=vals16.device)
    A.scatter_(2, idx.reshape(M, K // 4, 2).long(), vals16.reshape(M, K // 4, 2))
    return A.reshape(M, K)


def rand_pattern(M, K, gen):
    c = torch.randint(0, 6, (M * K // 4,), generator=gen)
    return PAIRS[c].reshape(M, K // 2).to(DEV)


def const_pattern(M, K, pair):
    return torch.tensor(pair, device=DEV).repeat(M * K // 4).reshape(M, K // 2)


def nibbles(raw16):
    b = raw16.contiguous().view(torch.uint8).to(torch.int32)
    return torch.stack([b & 0xF, b >> 4], -1).reshape(-1)


_FAKE_PERM = {}


def fake_compress(A):
    """CPU stand-in (row-major values + nibbles, then a fixed shuffle)."""
    M, K = A.shape
    nz = (A != 0).reshape(M, K // 4, 4)
    pos = torch.arange(4).expand_as(nz)
    key = torch.where(nz, pos, pos + 4)
    idx = key.sort(-1).values[..., :2] % 4
    idx = torch.where(nz.sum(-1, keepdim=True) == 0, torch.tensor([0, 1]), idx)
    idx = torch.sort(idx, -1).values
    vals = A.reshape(M, K // 4, 4).gather(2, idx).reshape(-1)
    nib = (idx[..., 0] | (idx[..., 1] << 2)).reshape(-1)
    if (M, K) not in _FAKE_PERM:
        g = torch.Generator().manual_seed(M * 100003 + K)
        _FAKE_PERM[(M, K)] = (torch.randperm(vals.numel(), generator=g),
                              torch.randperm(nib.numel(), generator=g))
        if M * K > 4096:  # make it realistic: structured (no shuffle) for big ones
            _FAKE_PERM[(M, K)] = (torch.arange(vals.numel()), torch.arange(nib.numel()))
    pv, pn = _FAKE_PERM[(M, K)]
    ov = torch.empty_like(vals)
    ov[pv] = vals
    on = torch.empty_like(nib)
    on[pn] = nib
    on = on.reshape(-1, 2)
    mb = (on[:, 0] | (on[:, 1] << 4)).to(torch.uint8)
    return torch.cat([ov, mb.view(torch.int16)]).reshape(M, -1)


def compress(A16, dtype):
    """dense int16 bits [M,K] -> raw output int16 (flat) and the output's shape."""
    if FAKE:
        out = fake_compress(A16)
    else:
        out = torch._cslt_compress(A16.view(dtype))
    shape = tuple(out.shape)
    return out.contiguous().view(-1).view(torch.int16), shape


# ----------------------------------------------------------------------------- maps
def invert(ids, where, n):
    """inv[ids[where]] = where for n ids, and whether every id appears exactly once."""
    inv = torch.full((n,), -1, dtype=torch.int64, device=DEV)
    inv[ids[where].long()] = where
    return inv, bool((torch.bincount(ids[where].long(), minlength=n) == 1).all())


def probe_maps(M, K, seed=0, keep_raw=False, check_fp16=True):
    t0 = time.time()
    bf16 = torch.bfloat16
    gen = torch.Generator().manual_seed(seed * 7919 + M * 131 + K)
    NV, G = M * K // 2, M * K // 4
    res = dict(M=M, K=K)
    k = torch.arange(NV, device=DEV)
    patR = rand_pattern(M, K, gen)
    lo, hi = enc_ids(k & 0x7FFF), enc_ids(k >> 15)
    Alo, Ahi = dense_from(lo, patR, M, K), dense_from(hi, patR, M, K)
    rlo, shp = compress(Alo, bf16)
    rhi, _ = compress(Ahi, bf16)
    res["out_shape"] = shp
    res["numel"] = rlo.numel()
    res["expected_numel"] = M * K * 9 // 16
    nlo, vlo = dec_ids(rlo)
    nhi, vhi = dec_ids(rhi)
    kk = nlo | (nhi << 15)
    valid = vlo & vhi & (kk < NV)
    slots = valid.nonzero().squeeze(1)
    vinv, res["vmap_bijective"] = invert(kk, slots, NV)
    res["vmap_nvalid"] = int(slots.numel())
    # same ids under another pattern -> do the value slots depend on the pattern?
    r2, _ = compress(dense_from(lo, const_pattern(M, K, (1, 3)), M, K), bf16)
    res["vmap_pattern_independent"] = bool(torch.equal(r2[slots], rlo[slots]))
    if check_fp16:
        rf, shpf = compress(Alo, torch.float16)
        res["fp16_same_bits_ids"] = bool(torch.equal(rf, rlo)) and shpf == shp

    # metadata bit planes
    one = torch.full((NV,), 0x3F80, dtype=torch.int16, device=DEV)  # 1.0 bf16, no 4/E nibble
    n0 = nibbles(compress(dense_from(one, const_pattern(M, K, (0, 1)), M, K), bf16)[0])
    n1 = nibbles(compress(dense_from(one, const_pattern(M, K, (2, 3)), M, K), bf16)[0])
    B = max(1, math.ceil(math.log2(G)))
    g = torch.arange(G, device=DEV)
    ok = n0 != n1
    gid = torch.zeros_like(n0)
    raw_planes = []
    for b in range(B):
        bit = (g >> b) & 1
        pat = torch.where(bit[:, None] == 1, torch.tensor([2, 3], device=DEV),
                          torch.tensor([0, 1], device=DEV)).reshape(M, K // 2)
        rb = compress(dense_from(one, pat, M, K), bf16)[0]
        if keep_raw:
            raw_planes.append(rb.cpu())
        nb = nibbles(rb)
        ok &= (nb == n0) | (nb == n1)
        gid |= (nb == n1).to(torch.int32) << b
    ok &= gid < G
    pos = ok.nonzero().squeeze(1)
    ginv, res["gmap_bijective"] = invert(gid, pos, G)
    res["gmap_nvalid"] = int(pos.numel())
    pairs = torch.stack([n0[pos], n1[pos]], 1)
    res["meta_nibble_pairs"] = torch.unique(pairs, dim=0).cpu()  # expect [[4, 14]]

    # consistency: random pattern, random values; predicted from maps vs actual
    patQ = rand_pattern(M, K, gen)
    vq = torch.randn(NV, generator=gen).to(bf16).to(DEV)
    vq = torch.where(vq == 0, torch.ones_like(vq), vq).view(torch.int16)
    rq, _ = compress(dense_from(vq, patQ, M, K), bf16)
    if res["vmap_bijective"] and res["gmap_bijective"]:
        res["check_values_mismatch"] = int((rq[vinv] != vq).sum())
        code = (patQ.reshape(G, 2) * torch.tensor([1, 4], device=DEV)).sum(1)
        nq = nibbles(rq)
        res["check_meta_mismatch"] = int((nq[ginv] != code).sum())
        covered = torch.zeros(nq.numel(), dtype=torch.bool, device=DEV)
        covered[ginv] = True
        vs = vinv[:, None] * 4 + torch.arange(4, device=DEV)
        covered[vs.reshape(-1)] = True
        res["uncovered_nibbles"] = int((~covered).sum())
        if (~covered).any():
            res["uncovered_nibble_values"] = torch.unique(nq[~covered]).cpu()
    if check_fp16:
        rqf, _ = compress(dense_from(vq, patQ, M, K), torch.float16)
        res["fp16_same_bits_random"] = bool(torch.equal(rqf, rq))
    res["vinv"] = vinv.to(torch.int32).cpu()
    res["ginv"] = ginv.to(torch.int32).cpu()
    if keep_raw:
        res["raw"] = dict(patR=patR.to(torch.uint8).cpu(), rlo=rlo.cpu(), rhi=rhi.cpu(),
                          n0=n0.to(torch.uint8).cpu(), n1=n1.to(torch.uint8).cpu(),
                          planes=raw_planes, patQ=patQ.to(torch.uint8).cpu(),
                          vq=vq.cpu(), rq=rq.cpu())
    res["secs"] = time.time() - t0
    return res


def summary(r):
    return {k: v for k, v in r.items() if not isinstance(v, (torch.Tensor, dict))}


# ----------------------------------------------------------------------------- special probes
def logged_probe(tag, M, K, **kw):
    """probe_maps with its summary (or its failure) in the log; None if it failed."""
    try:
        r = probe_maps(M, K, **kw)
    except Exception:
        log(tag + " FAIL", M, K, traceback.format_exc())
        return None
    log(tag, summary(r))
    return r


def special_probe(M, K, seed=1):
    """Groups with 0..4 non-zeros: mask per group uniformly in 0..15."""
    gen = torch.Generator().manual_seed(seed)
    G = M * K // 4
    masks = torch.randint(0, 16, (G,), generator=gen)
    bits = ((masks[:, None] >> torch.arange(4)) & 1).bool().reshape(M, K).to(DEV)
    d = torch.arange(M * K, device=DEV)
    ids = enc_ids(d & 0x7FFF).reshape(M, K)
    A = torch.where(bits, ids, torch.zeros_like(ids))
    out = dict(M=M, K=K, masks=masks.to(torch.uint8))
    out["raw_ids"] = compress(A, torch.bfloat16)[0].cpu()
    # same masks, random magnitudes: does the choice for 3/4 nnz depend on values?
    rv = torch.randn(M, K, generator=gen).to(torch.bfloat16).to(DEV).view(torch.int16)
    Ar = torch.where(bits, rv, torch.zeros_like(rv))
    out["rand_vals"] = Ar.cpu()
    out["raw_rand"] = compress(Ar, torch.bfloat16)[0].cpu()
    out["raw_ids_fp16"] = compress(A, torch.float16)[0].cpu()
    # negative zero in a kept slot: is -0.0 treated as zero?
    negz = torch.where(bits, ids, torch.full_like(ids, -32768))  # 0x8000 = -0.0
    out["raw_negzero_fill"] = compress(negz, torch.bfloat16)[0].cpu()
    if not FAKE:
        Bm = torch.randn(K, 128, generator=gen).to(torch.bfloat16).to(DEV)
        for name, Ain in (("ids", A), ("rand", Ar)):
            try:
                c = torch._cslt_compress(Ain.view(torch.bfloat16))
                out["mm_" + name] = torch._cslt_sparse_mm(c, Bm).float().cpu()
            except Exception as e:
                out["mm_" + name + "_err"] = repr(e)
        out["B"] = Bm.cpu()
    return out


def mm_check(M, K, N, dtype, seed=3):
    gen = torch.Generator().manual_seed(seed)
    pat = rand_pattern(M, K, gen)
    v = torch.randn(M * K // 2, generator=gen).to(dtype).to(DEV).view(torch.int16)
    A = dense_from(v, pat, M, K).view(dtype)
    B = torch.randn(K, N, generator=gen).to(dtype).to(DEV)
    C = torch._cslt_sparse_mm(torch._cslt_compress(A), B).float()
    ref = A.float() @ B.float()
    return dict(M=M, K=K, N=N, dtype=str(dtype),
                max_abs_err=float((C - ref).abs().max()), ref_max=float(ref.abs().max()))


# ----------------------------------------------------------------------------- main
def main():
    outdir = [a for a in sys.argv[1:] if not a.startswith("--")][0]
    os.makedirs(outdir, exist_ok=True)
    env = dict(torch=torch.__version__, fake=FAKE)
    if not FAKE:
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name()
        env["capability"] = torch.cuda.get_device_capability()
        try:
            env["cusparselt"] = torch.backends.cusparselt.version()
        except Exception as e:
            env["cusparselt"] = repr(e)
    log("env", env)
    probes = dict(env=env)

    def save(name, obj):
        p = os.path.join(outdir, name)
        torch.save(obj, p)
        log("saved", p, os.path.getsize(p) / 2**20, "MiB")

    part = "grid" if "--grid" in sys.argv else "main"
    if part == "main":
        # small shapes with raw outputs kept (golden fixtures, bit-level analysis)
        probes["raw_maps"] = {}
        for M, K in ((16, 32), (32, 64), (64, 64), (64, 128), (128, 64), (128, 128)):
            r = logged_probe("raw", M, K, keep_raw=True)
            if r is not None:
                probes["raw_maps"][(M, K)] = r

        # groups with != 2 non-zeros
        probes["special"] = {}
        for M, K in ((128, 256), (64, 128)):
            try:
                probes["special"][(M, K)] = special_probe(M, K)
            except Exception:
                log("special FAIL", M, K, traceback.format_exc())

        # sparse mm sanity
        probes["mm"] = []
        if not FAKE:
            for M, K, N in ((256, 512, 256), (1024, 2048, 512)):
                for dt in (torch.bfloat16, torch.float16):
                    try:
                        r = mm_check(M, K, N, dt)
                    except Exception as e:
                        r = dict(M=M, K=K, N=N, dtype=str(dt), err=repr(e)[:300])
                    probes["mm"].append(r)
                    log("mm", r)
        probes["log"] = LOG
        save("probes.pt", probes)

        # medium and big shapes: maps only
        def maps_file(name, shapes):
            d = {}
            for M, K in shapes:
                if FAKE and M * K > 2**16:
                    continue
                r = logged_probe("map", M, K)
                if r is not None:
                    d[(M, K)] = r
                if not FAKE:
                    torch.cuda.empty_cache()
            save(name, d)

        maps_file("medium.pt", [(256, 512), (512, 256), (384, 640), (640, 384), (128, 4096),
                                (4096, 128), (1024, 1024)])
        maps_file("big_a.pt", [(1024, 2048), (2048, 1024)])
        maps_file("big_b.pt", [(64, 32768), (32768, 64)])
    else:
        # which shapes are accepted (odd shapes may break the CUDA context: own process)
        Ms = [8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 144, 160, 192, 256, 320]
        Ks = [8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320]
        accept, grid = [], {}
        for M in Ms:
            for K in Ks:
                entry = dict(M=M, K=K)
                for dt in (torch.bfloat16, torch.float16):
                    try:
                        o, shp = compress(torch.ones(M, K, dtype=torch.int16, device=DEV)
                                          * 0x3C00 * (torch.arange(K, device=DEV) % 4 < 2), dt)
                        entry[str(dt)] = dict(ok=True, shape=shp, numel=o.numel())
                    except Exception as e:
                        entry[str(dt)] = dict(ok=False, err=repr(e)[:300])
                accept.append(entry)
                if entry["torch.bfloat16"]["ok"]:
                    r = logged_probe("grid", M, K)
                    if r is not None:
                        grid[(M, K)] = r
                else:
                    log("reject", M, K, entry["torch.bfloat16"]["err"][:150])
        save("grid_maps.pt", dict(accept=accept, grid=grid, log=LOG))
    with open(os.path.join(outdir, "log_%s.txt" % part), "w") as f:
        f.write("\n".join(LOG))


if __name__ == "__main__":
    main()
