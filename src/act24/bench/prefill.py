"""Prefill latency and decode speed of a Nemotron-like model, dense vs act24 sparse.

The model is transformers' NemotronForCausalLM, randomly initialised (no download), or a
causal LM of the user's (`model_path`: a local folder or a hub id, through from_pretrained),
converted with act24.convert; dense and sparse are the same converted model with its
FFNs' `sparse` switch off and on. Random weights give ~50% zeros after ReLU², a trained
model 85-98%: the speed does not depend on the values, but the share of non-zeros the
2:4 mask drops does (far more with random weights than in a trained model), and so do logit
agreement and greedy-token agreement. Prompts are random token ids either way.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time

import torch

import act24
from act24.ffn import backend, dispatch, ffn_modules, set_sparse
from act24.reference.checks import first_line

from .common import ROUNDS, alternating_medians

TOKENS = (2048, 4096, 8192, 16384, 32768)
SHORT_TOKENS = (64, 128)
# 0.97B parameters: d=4096, hidden 16384 (Nemotron's 4x, Squared ReLU, not gated)
CONFIGS = {
    "1b": dict(hidden_size=4096, intermediate_size=16384, num_hidden_layers=4, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768 + 256),
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=128, max_position_embeddings=512),
}
NEW_TOKENS = 33  # greedy continuation compared in the agreement check
DECODE_STEPS, DECODE_WARMUP = 64, 8  # decode tokens timed per mode, after untimed ones
# SDPA kernels tried for the prefill (torch.nn.attention.SDPBackend names, and "default": PyTorch's own
# choice); the dense model's fastest times both modes: the baseline is the best dense model, and a slow
# attention would dilute the FFN's share
ATTENTION_KERNELS = ("default", "FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
COLUMNS = [("T", "T", "d"), ("dense_ms", "dense ms", ".2f"), ("sparse_ms", "sparse ms", ".2f"),
           ("speedup", "speedup", ".3f"), ("decode_dense_tok_s", "decode dense tok/s", ".1f"),
           ("decode_sparse_tok_s", "decode sparse tok/s", ".1f"), ("decode_ratio", "decode ratio", ".3f"),
           ("dropped_fraction", "dropped", ".3f"), ("attention_kernel", "attention", "s")]


def build_model(config: str, device: torch.device, dtype: torch.dtype):
    try:
        from transformers import NemotronConfig, NemotronForCausalLM
    except ImportError as e:
        raise RuntimeError("act24 bench prefill needs transformers (pip install transformers)") from e
    torch.manual_seed(0)
    cfg = NemotronConfig(**CONFIGS[config], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(device):
        model = NemotronForCausalLM(cfg)
    model = model.to(dtype).eval()
    report = act24.convert(model, sparse=True)
    return model, report


def load_model(path: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False):
    """A causal LM from a local folder or the Hugging Face hub (from_pretrained), converted."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise RuntimeError("act24 bench prefill needs transformers (pip install transformers)") from e
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except Exception as e:  # no such folder or hub id, no causal-LM class, a missing package, the model's own code
        summary = ": ".join(filter(None, (type(e).__name__, first_line(e))))
        raise RuntimeError(f"--model {path!r} could not be loaded as a causal LM: {summary}") from e
    model = model.to(device).eval()
    try:
        report = act24.convert(model, sparse=True)
    except ValueError as e:
        raise RuntimeError(f"--model {path!r}: {e}") from e
    return model, report


def extra_tokens(device: torch.device) -> int:
    """Tokens generated after a prompt: the decode timing's (untimed ones included) or the agreement's."""
    return max(DECODE_WARMUP + 2 * decode_steps(device) + 1, NEW_TOKENS)


def decode_steps(device: torch.device) -> int:
    return DECODE_STEPS if device.type == "cuda" else 4


def mlp_stats(model: torch.nn.Module, ids: torch.Tensor) -> tuple[float, float]:
    """Mean activation sparsity and dropped fraction over the FFNs, from one untimed prefill."""
    ffns = ffn_modules(model)
    for f in ffns:
        f.track_stats = True
    model(ids, use_cache=False, logits_to_keep=1)
    for f in ffns:
        f.track_stats = False
    stats = [f.last_stats for f in ffns]
    return (sum(s.activation_sparsity for s in stats) / len(stats), sum(s.dropped_fraction for s in stats) / len(stats))


def attention_kernel(name: str | None):
    """A context that makes SDPA run the named kernel (None or "default": PyTorch's own choice)."""
    if name in (None, "default"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, name))


def fastest_attention(model, ids) -> tuple[str | None, dict[str, float]]:
    """(the SDPA kernel under which the dense model's prefill of ids is fastest, each kernel's dense ms);
    kernels that cannot run this model are left out. One alternating round (A B C C B A)."""
    set_sparse(model, False)

    def prefill(name):
        def run():
            with attention_kernel(name):
                return model(ids, use_cache=False, logits_to_keep=1)
        return run

    runnable = {}
    for name in ATTENTION_KERNELS:
        try:
            prefill(name)()
        except RuntimeError:  # e.g. no kernel of that kind for this dtype, head size or GPU
            continue
        runnable[name] = prefill(name)
    if not runnable:
        return None, {}
    times = alternating_medians(runnable, rounds=1)
    return min(times, key=times.get), times


def prefill_ms(model, ids, rounds: int = ROUNDS, attention: str | None = None) -> dict[str, float]:
    """Median prefill time of each mode, the modes alternated (see alternating_medians), SDPA running
    the `attention` kernel."""
    ffns = ffn_modules(model)  # found once: the timed calls only flip the switch

    def prefill(sparse: bool):
        def run():
            for f in ffns:
                f.sparse = sparse
            with attention_kernel(attention):
                return model(ids, use_cache=False, logits_to_keep=1)
        return run

    return alternating_medians({"dense": prefill(False), "sparse": prefill(True)}, rounds)


class _AlternatingModes:
    """A generate() stopping criterion that never stops: it is called once per new token, so it
    times each token and switches the FFNs' mode for the next one (dense, sparse, sparse, dense, ...)."""

    def __init__(self, model):
        self.model, self.step, self.mode, self.started = model, 0, None, None
        self.samples: dict[str, list[float]] = {"dense": [], "sparse": []}

    def __call__(self, input_ids, scores, **kwargs):
        if input_ids.device.type == "cuda":
            torch.cuda.synchronize()
        if self.started is not None and self.step > DECODE_WARMUP:
            self.samples[self.mode].append(time.perf_counter() - self.started)
        self.mode = ("dense", "sparse", "sparse", "dense")[self.step % 4]
        set_sparse(self.model, self.mode == "sparse")
        self.step += 1
        self.started = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def decode_tokens_per_s(model, ids, steps: int = DECODE_STEPS) -> dict[str, float]:
    """Decode speed of both modes after the prompt `ids`, inside one greedy generate() call: each
    new token's latency (forward on the KV cache plus generate's own per-token work) is timed,
    with the modes alternating token by token so that clock and host drift fall on both alike;
    tokens/s is 1 over each mode's median latency. An untimed generate() of the same length goes first."""
    from transformers import StoppingCriteriaList

    timer = _AlternatingModes(model)
    new_tokens = DECODE_WARMUP + 2 * steps + 1
    generate = functools.partial(model.generate, ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=0)
    # untimed first: on the H200 the first step at each new cache length cost ~40 ms of one-time
    # set-up (both modes alike: decode runs dense in both), 10x a warm step
    generate()
    generate(stopping_criteria=StoppingCriteriaList([timer]))
    return {mode: 1 / statistics.median(v) for mode, v in timer.samples.items()}


def agreement(model, ids) -> dict:
    """Sparse vs dense on one prompt: last-position logits and greedy continuation."""
    out = {}
    for sparse in (False, True):
        set_sparse(model, sparse)
        logits = model(ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        greedy = model.generate(ids, max_new_tokens=NEW_TOKENS - 1, min_new_tokens=NEW_TOKENS - 1, do_sample=False,
                                pad_token_id=0)[0, ids.shape[1]:]
        out[sparse] = logits, greedy
    (ld, gd), (ls, gs) = out[False], out[True]
    return {
        "prompt_tokens": ids.shape[1],
        "logits_max_abs_diff": (ls - ld).abs().max().item(),
        "logits_rel_err": ((ls - ld).norm() / ld.norm()).item(),
        "top1_match": bool(ls.argmax() == ld.argmax()),
        "greedy_token_agreement": (gs == gd).float().mean().item(),
    }


def prompt_room(device: torch.device, limit: int | None) -> int | None:
    """The longest prompt a model of `limit` positions takes with the tokens generated after it (None: any)."""
    return limit - extra_tokens(device) if limit else None


def default_tokens(device: torch.device, limit: int | None, short: bool = False) -> tuple[int, ...]:
    """TOKENS on a GPU, two short prompts on a CPU or when `short`: those the model's positions allow,
    else the longest multiple of 64 that they do."""
    candidates = TOKENS if device.type == "cuda" and not short else SHORT_TOKENS
    room = prompt_room(device, limit)
    fitting = tuple(t for t in candidates if room is None or t <= room)
    if fitting:
        return fitting
    if room < 64:
        raise RuntimeError(f"the model takes at most max_position_embeddings={limit} positions: too few for a "
                           f"64-token prompt and the {extra_tokens(device)} tokens the benchmark generates after it")
    return (room // 64 * 64,)


def prefill_rows(config: str = "1b", tokens=None, device: str = "cuda", progress=None, rounds: int | None = None,
                 model_path: str | None = None, trust_remote_code: bool = False):
    """tokens: the prompt lengths (None: default_tokens)."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if model_path:
        model, report = load_model(model_path, dev, dtype, trust_remote_code=trust_remote_code)
    else:
        model, report = build_model(config, dev, dtype)
    limit = getattr(model.config, "max_position_embeddings", None)
    tokens = tuple(tokens) if tokens else default_tokens(dev, limit, short=not model_path and config == "tiny")
    room = prompt_room(dev, limit)
    too_long = [t for t in tokens if room is not None and t > room]
    if too_long:
        raise RuntimeError(f"--tokens {too_long}: the model takes at most max_position_embeddings={limit} positions, "
                           f"and the benchmark generates {extra_tokens(dev)} tokens after each prompt")
    # the first MLP's sizes decide the rows' fused_gemm1 and which prompt the agreement check uses;
    # every MLP dispatches on its own sizes (mlp_sizes lists them)
    d, hidden = report.converted[0].d, report.converted[0].hidden
    vocab = model.get_input_embeddings().num_embeddings
    g = torch.Generator(device="cpu").manual_seed(0)
    rows = []
    rounds = rounds or (ROUNDS if dev.type == "cuda" else 1)
    with torch.inference_mode():
        for T in tokens:
            ids = torch.randint(3, vocab, (1, T), generator=g).to(dev)
            attention, attention_ms = fastest_attention(model, ids) if dev.type == "cuda" else (None, {})
            timed = prefill_ms(model, ids, rounds=rounds, attention=attention)
            row = {"T": T, "dense_ms": timed["dense"], "sparse_ms": timed["sparse"],
                   "attention_kernel": attention, "dense_ms_by_attention_kernel": attention_ms}
            decode = decode_tokens_per_s(model, ids, steps=decode_steps(dev))
            row["decode_dense_tok_s"], row["decode_sparse_tok_s"] = decode["dense"], decode["sparse"]
            row["decode_ratio"] = decode["sparse"] / decode["dense"]
            row["speedup"] = row["dense_ms"] / row["sparse_ms"]
            shape = (T, d, hidden)
            row["fused_gemm1"] = dispatch.use_sparse(*shape) and backend.use_fused_gemm1(dev, dtype, *shape)
            set_sparse(model, True)
            row["act_sparsity"], row["dropped_fraction"] = mlp_stats(model, ids)
            rows.append(row)
            if progress:
                progress(row)
        # the shortest prompt the dispatch sends to the 2:4 path (shorter ones run dense in both modes)
        sparse_lengths = [t for t in tokens if dispatch.use_sparse(t, d, hidden)]
        check = agreement(model, torch.randint(3, vocab, (1, min(sparse_lengths or tokens)), generator=g).to(dev))
        check["prompt_runs_sparse"] = bool(sparse_lengths) or dev.type != "cuda"  # the CPU always runs the recipe
    meta = {
        "model": f"{type(model).__name__}, {f'from {model_path}' if model_path else 'random init'}, "
                 f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B params",
        "config": {"path": model_path, "d": d, "hidden": hidden} if model_path else CONFIGS[config],
        "attention": getattr(model.config, "_attn_implementation", None),
        "attention_kernel": "prefill: each row's fastest SDPA kernel for the dense model, both modes; decode and "
                            "agreement: PyTorch's choice",
        "dtype": str(dtype).removeprefix("torch."),
        "converted_mlps": len(report.converted),
        "mlp_sizes": sorted({(c.d, c.hidden) for c in report.converted}),
        "prefill_timing": f"each mode's median over {rounds} rounds of dense, sparse, sparse, dense (do_bench medians)",
        "agreement": check,
        "fused_gemm1": ("each row's fused_gemm1 (ffn/backend.py: use_fused_gemm1)"
                        if backend.fused_gemm1_allowed(dev, dtype, d)
                        else backend.fused_gemm1_reason(dev, dtype) or f"off above d={backend.FUSED_GEMM1_MAX_D}"),
    }
    return rows, meta
