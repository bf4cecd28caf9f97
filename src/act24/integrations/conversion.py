"""act24.convert: swap a model's Squared-ReLU MLPs for act24 modules in place, in one call.

Recognised by class name (so transformers is not imported): act24's own SquaredReLUFFN /
SquaredReLUMLP and the non-gated MLPs of transformers' Nemotron, Nemotron-H (dense and
shared-expert MLPs), Arcee, Persimmon, NanoChat, Jais2, Ergo (its dense layers), Cosmos3 Edge
(text) and NeoMME. Any other module named like an MLP (your own model's, a newer transformers
class) is recognised by behaviour: two plain nn.Linear layers d -> hidden -> d, a forward of one
input, no other parameters, buffers, hooks or submodules beyond activations and inactive dropout,
and an output bit-equal to down(relu(up(x))**2) on probes in eval and train mode. The Linear layers
are kept as they are, under their own names, so state-dict keys, biases and weight tying do not
change. A recognised MLP whose activation is not Squared ReLU or whose layers are not plain
nn.Linear, any gated MLP and any mixture-of-experts block is left alone and reported.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..ffn import SquaredReLUFFNBase, SquaredReLUMLP
from ..reference import dense_feature_count
from ..reference.checks import check_bool, first_line
from ..reference.selection import GROUP

# class name -> (up projection, down projection, activation) attribute names
KNOWN_MLPS: dict[str, tuple[str, str, str]] = {
    "NemotronMLP": ("up_proj", "down_proj", "act_fn"),
    "NemotronHMLP": ("up_proj", "down_proj", "act_fn"),
    "ArceeMLP": ("up_proj", "down_proj", "act_fn"),
    "PersimmonMLP": ("dense_h_to_4h", "dense_4h_to_h", "act"),
    "NanoChatMLP": ("fc1", "fc2", "activation_fn"),
    "Jais2MLP": ("up_proj", "down_proj", "act_fn"),
    "ErgoMLP": ("up_proj", "down_proj", "act_fn"),
    "Cosmos3EdgeTextMLP": ("fc1", "fc2", "activation_fn"),
    "NeoMMEMLP": ("up_proj", "down_proj", "act_fn"),
}
GATE_ATTRIBUTES = ("gate_proj", "gate_up_proj", "gate_up", "w3", "gate")
MLP_NAME_HINTS = ("mlp", "ffn", "feedforward", "glu")
EXPERT_NAME_HINTS = ("expert", "moe")
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
MOE_REASON = ("mixture-of-experts weights (fused per-expert tensors) are not converted; shared experts "
              "and dense MLPs inside it are, where they are plain Squared-ReLU MLPs")


@dataclass(frozen=True)
class ConvertedModule:
    path: str
    kind: str  # the class that was there
    d: int
    hidden: int
    reconfigured: bool = False  # already an act24 module: only its options were set


@dataclass(frozen=True)
class SkippedModule:
    path: str
    kind: str
    reason: str


@dataclass
class ConversionReport:
    converted: list[ConvertedModule] = field(default_factory=list)
    skipped: list[SkippedModule] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"act24.convert: {len(self.converted)} converted, {len(self.skipped)} skipped"]
        lines += [f"  {'reconfigured' if c.reconfigured else 'converted'} {c.path} ({c.kind}, d={c.d}, hidden={c.hidden})"
                  for c in self.converted]
        lines += [f"  skipped   {s.path} ({s.kind}): {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def is_squared_relu(act: object) -> bool:
    """True when `act` computes relu(x)**2, checked on a probe with negatives, zero and ties."""
    if not callable(act):
        return False
    probe = torch.tensor([-3.0, -1.0, -0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 7.25], dtype=torch.float64)
    try:
        with torch.no_grad():
            out = act(probe.clone())
    except Exception:  # an activation that cannot take a float64 CPU vector is not one we know
        return False
    return isinstance(out, torch.Tensor) and out.shape == probe.shape and torch.equal(out, probe.clamp(min=0) ** 2)


def _linear_problem(name: str, layer: object) -> str | None:
    """Why `layer` cannot be read as a plain weight (+ bias), or None."""
    if type(layer) is not nn.Linear:  # subclasses (quantized, LoRA, ...) compute something else
        return f"{name!r} is {type(layer).__name__}, not a plain nn.Linear"
    if _has_hooks(layer):
        return f"{name!r} has hooks (offloading, adapters, probes) that the fused FFN would bypass"
    if not layer.weight.is_floating_point() or layer.weight.is_meta:
        return f"{name!r} has a {layer.weight.dtype} weight on {layer.weight.device}, not a materialised float weight"
    return None


class _Verdict(NamedTuple):
    action: str  # "convert", "act24" (already ours), "skip" or "" (not an MLP)
    names: tuple[str, str] | None = None  # convert: the up and down Linear layers' attribute names
    reason: str = ""  # skip: why


def _skip(reason: str) -> _Verdict:
    return _Verdict("skip", reason=reason)


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _module_problem(module: nn.Module, linear_names: tuple[str, str]) -> str | None:
    """Why `module`, whatever its order of layers, cannot be replaced without losing something, or None."""
    if _has_hooks(module):
        return "it has hooks (offloading, adapters, probes) that replacing it would drop"
    if "forward" in vars(module) or hasattr(module, "_hf_hook"):
        return "its forward is replaced on the instance (a wrapper or an offloading hook) that converting would drop"
    layers = [getattr(module, n) for n in linear_names]
    for name, sub in module.named_modules():
        if sub is not module and not any(sub is layer for layer in layers) and _has_hooks(sub):
            return f"{name!r} has hooks (offloading, adapters, probes) that replacing it would drop"
    state = set(dict(module.named_parameters())) | set(dict(module.named_buffers()))
    extra = sorted(state - {f"{n}.{p}" for n in linear_names for p in ("weight", "bias")})
    if extra:
        return f"parameters or buffers outside the two Linear layers would be lost: {extra}"
    return None


def _hidden_problem(up: nn.Linear) -> str | None:
    if up.out_features % GROUP:
        return f"hidden size {up.out_features} is not a multiple of {GROUP} (2:4 groups)"
    return None


def _known_verdict(module: nn.Module) -> _Verdict:
    up_name, down_name, act_name = KNOWN_MLPS[type(module).__name__]
    up, down = getattr(module, up_name, None), getattr(module, down_name, None)
    problem = _linear_problem(up_name, up) or _linear_problem(down_name, down)
    if problem:
        return _skip(problem)
    act = getattr(module, act_name, None)
    if not is_squared_relu(act):
        return _skip(f"activation {type(act).__name__} is not Squared ReLU (relu(x)**2)")
    problem = _module_problem(module, (up_name, down_name)) or _hidden_problem(up)
    return _skip(problem) if problem else _Verdict("convert", (up_name, down_name))


def _probe_problem(module: nn.Module, linears: list[tuple[str, nn.Linear]]) -> str | None:
    """Why the probe could miss what `module` does, or None; checked before it runs (an unknown
    submodule may act only in some mode or on some input)."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return "its forward's signature cannot be read"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(parameters) != 1 or parameters[0].kind not in positional:
        names = ", ".join(str(p) for p in parameters)
        return f"its forward takes ({names}), not a single input the act24 module could take instead"
    layers = [layer for _, layer in linears]
    others = [(n, c) for n, c in module.named_children() if not any(c is layer for layer in layers)]
    dropouts = [n for n, c in others if isinstance(c, DROPOUTS) and c.p > 0]
    if dropouts:
        return f"dropout {dropouts} would be lost"
    unknown = [f"{n!r} ({type(c).__name__})" for n, c in others
               if not (isinstance(c, (nn.Identity, nn.ReLU, *DROPOUTS)) or is_squared_relu(c))]
    if unknown:
        return f"submodules that are not Squared ReLU and that the act24 module would drop: {', '.join(unknown)}"
    return None


def _same(out: object, expected: torch.Tensor) -> bool:
    """Bit-equal, NaN matching NaN: the same ops in the same order round alike, and a looser tolerance
    would let a scaled or clamped variant through."""
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape or out.dtype != expected.dtype:
        return False
    return bool(((out == expected) | (out.isnan() & expected.isnan())).all())


def _probe_mismatch(module: nn.Module, up: nn.Linear, down: nn.Linear) -> tuple[bool, str] | None:
    """None when module(x) is down(relu(up(x))**2) on probes of two scales in the weights' dtype and
    device, in eval mode without gradients and in train mode with them (as it is used); else (whether
    the forward raised, what differed). The global RNG state and every submodule's mode are left as found."""
    weight = up.weight
    base = torch.randn(2, 3, up.in_features, generator=torch.Generator().manual_seed(0))
    modes = [(m, m.training) for m in module.modules()]
    rng_devices = [] if weight.device.type == "cpu" else [weight.device]
    try:
        with torch.random.fork_rng(devices=rng_devices, device_type=weight.device.type):
            for training in (False, True):
                module.train(training)
                for scale in (1.0, 16.0):  # 16x: a clamp or saturation that small values never reach
                    probe = (base * scale).to(device=weight.device, dtype=weight.dtype)
                    with torch.set_grad_enabled(training and not weight.is_inference()):
                        out = module(probe)
                        expected = down(torch.relu(up(probe)) ** 2)
                    if not _same(out, expected):
                        return False, "its output on a probe is not"
    except Exception as e:  # a forward that fails on a plain tensor is not a plain MLP
        return True, f"its forward raised {type(e).__name__} ({first_line(e)}) on a probe, not giving"
    finally:
        for m, training in modes:
            m.training = training
    return None


def _verdict_by_behaviour(module: nn.Module) -> _Verdict | None:
    """convert (or skip, saying why) an unknown MLP class made of two Linear layers; None: it is not one."""
    linears = [(n, c) for n, c in module.named_children() if isinstance(c, nn.Linear)]
    if len(linears) != 2:
        return None
    (a_name, a), (b_name, b) = linears
    if not (a.in_features == b.out_features and a.out_features == b.in_features):
        return None  # not d -> hidden -> d either way round
    problem = (_linear_problem(a_name, a) or _linear_problem(b_name, b)
               or _module_problem(module, (a_name, b_name)) or _probe_problem(module, linears))
    if problem:
        return _skip(problem)
    # which layer is up is told by the output alone: h -> d -> h composes as well as d -> h -> d;
    # a forward fed the wrong width fails, so the reason reported is the right order's
    mismatches = []
    for up_name, up, down_name, down in ((a_name, a, b_name, b), (b_name, b, a_name, a)):
        mismatch = _probe_mismatch(module, up, down)
        if mismatch is None:
            problem = _hidden_problem(up)
            return _skip(problem) if problem else _Verdict("convert", (up_name, down_name))
        mismatches.append(mismatch)
    _, mismatch = min(mismatches, key=lambda m: m[0])  # an order that ran says more than one that raised
    return _skip(f"not a known Squared-ReLU MLP class, and {mismatch} down(relu(up(x))**2) with {a_name!r} "
                 f"and {b_name!r} as up and down, either way round")


def _classify(module: nn.Module) -> _Verdict:
    """What convert does with `module`, and why."""
    kind = type(module).__name__
    if isinstance(module, SquaredReLUFFNBase):
        return _Verdict("act24")
    if kind in KNOWN_MLPS:
        return _known_verdict(module)
    if any(h in kind.lower() for h in EXPERT_NAME_HINTS):
        return _verdict_by_behaviour(module) or _skip(MOE_REASON)  # a shared expert may be a plain MLP
    if any(h in kind.lower() for h in MLP_NAME_HINTS):
        gates = [a for a in GATE_ATTRIBUTES if isinstance(getattr(module, a, None), nn.Module)]
        if gates or "glu" in kind.lower():
            return _skip(f"gated MLP ({', '.join(gates) or kind}); 2:4 activation sparsity needs a "
                         "non-gated Squared-ReLU MLP, down(relu(up(x))**2)")
        by_behaviour = _verdict_by_behaviour(module)
        if by_behaviour:
            return by_behaviour
        return _skip("not a known Squared-ReLU MLP class (known: " + ", ".join(KNOWN_MLPS) + ") nor two Linear "
                     "layers d -> hidden -> d")
    return _Verdict("")


def convert(
    model: nn.Module,
    *,
    sparse: bool = True,
    dense_fraction: float = 0.05,
    perm_seed: int | None = 0,
    track_stats: bool = False,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> ConversionReport:
    """Replace every non-gated Squared-ReLU MLP in `model` with an act24 module, in place.

    sparse, dense_fraction, track_stats: options of the new modules (see SquaredReLUFFNBase).
    perm_seed: module i gets perm_seed + i (None: each draws its own).
    filter_fn(module, path): convert only where it returns True.
    Returns a ConversionReport; raises ValueError, listing what was found and why it was
    left alone, when there is nothing to convert.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_bool("sparse", sparse)
    check_bool("track_stats", track_stats)
    if perm_seed is not None and (isinstance(perm_seed, bool) or not isinstance(perm_seed, int)):
        raise TypeError(f"perm_seed must be an int or None, got {perm_seed!r}")
    dense_feature_count(4, dense_fraction)  # raises naming dense_fraction unless it is in [0, 1]
    report = ConversionReport()
    # every path, shared modules included: a module reachable twice is replaced at both, by one new module
    found = [(path, m) for path, m in model.named_modules(remove_duplicate=False) if path]
    converted_prefixes: list[str] = []
    replacements: dict[int, SquaredReLUFFNBase] = {}
    # applied once everything is decided, so that an error on the way leaves the model as it was
    planned: list[tuple[str, nn.Module, SquaredReLUFFNBase, int | None]] = []
    filtered_out = 0
    for path, module in found:
        if any(path.startswith(p + ".") for p in converted_prefixes):
            continue  # inside an MLP already handled
        if filter_fn is not None and not filter_fn(module, path):
            filtered_out += 1
            continue
        ffn, seed = replacements.get(id(module)), None  # ffn: set when this MLP was met at another path already
        if ffn is None:
            verdict = _classify(module)
            if not verdict.action:
                continue
            seed = None if perm_seed is None else perm_seed + len(replacements)
            if verdict.action == "act24":
                ffn = module
            elif verdict.action == "convert":
                up_name, down_name = verdict.names
                ffn = SquaredReLUMLP(getattr(module, up_name), getattr(module, down_name), up_name=up_name,
                                     down_name=down_name, sparse=sparse,
                                     dense_fraction=dense_fraction, perm_seed=seed, track_stats=track_stats)
                ffn.train(module.training)
            else:
                report.skipped.append(SkippedModule(path, type(module).__name__, verdict.reason))
                continue
            replacements[id(module)] = ffn
        planned.append((path, module, ffn, seed))
        converted_prefixes.append(path)
        report.converted.append(ConvertedModule(path, type(module).__name__, ffn.d, ffn.hidden,
                                                reconfigured=ffn is module))
    if not report.converted and _classify(model).action in ("convert", "act24"):
        raise ValueError(f"model itself is a {type(model).__name__}, which convert cannot replace in place: call "
                         "act24.convert on a model that contains it, or build act24.SquaredReLUMLP(up, down) directly")
    if not report.converted:
        details = "".join(f"\n  {s.path} ({s.kind}): {s.reason}" for s in report.skipped)
        if filtered_out:
            details += f"\n  filter_fn rejected {filtered_out} of the {len(found)} submodules it was asked about"
        details = details or " no MLP modules found"
        raise ValueError("act24.convert found no non-gated Squared-ReLU MLP to convert:" + details)
    for path, module, ffn, seed in planned:
        if ffn is module:
            ffn.sparse, ffn.dense_fraction, ffn.track_stats = sparse, dense_fraction, track_stats
            if seed is not None:
                ffn.perm_seed = seed
        else:
            model.set_submodule(path, ffn)
    return report
