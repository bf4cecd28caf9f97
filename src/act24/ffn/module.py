"""SquaredReLUFFN: the drop-in module (dense during warm-up, 2:4 sparse after)."""

from __future__ import annotations

import contextlib
import math
import weakref
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from .. import reference as ref
from ..reference.checks import check_bool, check_float, check_int, check_ndim
from . import dispatch
from ..ops import recipe_ops
from .backend import sparse_path


def _autocast_inputs(*tensors):
    """Cast like autocast would for a matmul (float64 is left alone), so the FFN can run with
    autocast disabled inside. None (an absent bias) passes through."""
    dev = tensors[0].device.type
    if dev != "meta" and torch.is_autocast_enabled(dev):  # meta has no autocast (see _autocast_disabled)
        dt = torch.get_autocast_dtype(dev)
        return tuple(t if t is None or t.dtype == torch.float64 else t.to(dt) for t in tensors)
    return tensors


def _autocast_disabled(device_type: str):
    # meta tensors (models built for FSDP, shape checks) have no autocast to disable; a string compare,
    # not torch.amp.is_autocast_available, which torch.compile could not trace before torch 2.13
    if device_type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


class SquaredReLUFFNBase(nn.Module):
    """The 2:4 machinery of act24's FFN modules; a subclass says where its weights live.

    y = relu(x @ w1.T + b1)**2 @ w2.T + b2, with 2:4 activation sparsity when `sparse` is True.
    In train mode the sparse FFN is the 2:4 recipe at every size, with or without autograd; in eval
    mode a GPU runs small calls (decode) densely, where that is faster: call .eval() for inference.
    sparse:         run the 2:4 recipe (turn on after the dense warm-up).
    dense_fraction: share of the densest features kept dense in the weight gradients.
    perm_seed:      seed of the fixed token grouping used by the weight gradients;
                    None draws one from torch's global generator.
    track_stats:    keep `last_stats` (activation sparsity, dropped fraction, feature density).
    """

    def __init__(
        self,
        d: int,
        hidden: int,
        *,
        sparse: bool = False,
        dense_fraction: float = 0.05,
        perm_seed: int | None = None,
        track_stats: bool = False,
    ):
        super().__init__()
        d, hidden = check_int("d", d, low=1), check_int("hidden", hidden, low=1)
        if hidden % ref.selection.GROUP:
            raise ValueError(f"hidden must be a multiple of 4 for 2:4 groups, got {hidden}")
        ref.dense_feature_count(hidden, dense_fraction)  # validates the fraction
        self.d, self.hidden = d, hidden
        self.sparse = sparse
        self.dense_fraction = dense_fraction
        # drawn on the CPU generator: also under `with torch.device("meta")` (large models built for FSDP)
        self.perm_seed = int(torch.randint(0, 2**31 - 1, (), device="cpu").item()) if perm_seed is None else perm_seed
        self.track_stats = track_stats
        self._last_counts: tuple | None = None  # (tokens, kept per feature, non-zeros)
        self._stats_hooks: OrderedDict[int, Callable[[nn.Module, ref.FFNStats], None]] = OrderedDict()
        # how many hooks there are, as a plain int: torch.compile guards on it (not on the dict), so a
        # hook registered or removed after a compiled call recompiles instead of being skipped
        self._num_stats_hooks = 0

    @property
    def sparse(self) -> bool:
        return self._sparse_mode

    @sparse.setter
    def sparse(self, value: bool) -> None:
        self._sparse_mode = check_bool("sparse", value)

    @property
    def track_stats(self) -> bool:
        return self._track_stats_mode

    @track_stats.setter
    def track_stats(self, value: bool) -> None:
        self._track_stats_mode = check_bool("track_stats", value)

    @property
    def perm_seed(self) -> int:
        return int(self._perm_seed_tensor)

    @perm_seed.setter
    def perm_seed(self, value: int) -> None:
        value = check_int("perm_seed", value, low=0, high=2**63)
        # kept as a CPU tensor (not moved by .to()), which the ops take: an int attribute would be baked
        # into compiled graphs, and blocks compiled from one forward would recompile for every layer's seed
        self._perm_seed_tensor = recipe_ops.seed_tensor(int(value))

    def __setstate__(self, state):
        # modules pickled whole before these became properties
        seed = state.pop("perm_seed", None)
        for flag in ("sparse", "track_stats"):
            if flag in state:
                state[f"_{flag}_mode"] = state.pop(flag)
        state.setdefault("_num_stats_hooks", len(state.get("_stats_hooks", ())))
        super().__setstate__(state)
        if seed is not None:
            self.perm_seed = seed

    def ffn_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(w1 [hidden, d], w2 [d, hidden], b1 [hidden] or None, b2 [d] or None)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"d={self.d}, hidden={self.hidden}, sparse={self.sparse}, dense_fraction={self.dense_fraction}"

    def register_stats_hook(self, hook: Callable[[nn.Module, ref.FFNStats], None]):
        """Call hook(module, stats) after every forward; returns a handle with .remove().

        Hooks run eagerly (reading the statistics synchronises with the GPU): under torch.compile
        the call is left out of the graph; with fullgraph=True read `last_stats` after the call instead."""
        if not callable(hook):
            raise TypeError(f"hook must be callable as hook(module, stats), got {type(hook).__name__}")
        handle = _StatsHookHandle(self)
        self._stats_hooks[handle.id] = hook
        self._num_stats_hooks = len(self._stats_hooks)
        return handle

    def token_permutation(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        """The fixed grouping of this module's tokens (padded to a multiple of 4) in the weight gradients."""
        return ref.cached_token_permutation(num_tokens, self.perm_seed, device)

    @property
    def num_dense_features(self) -> int:
        """Features whose weight gradients stay dense: the densest dense_fraction of hidden."""
        return ref.dense_feature_count(self.hidden, self.dense_fraction)

    @property
    def last_stats(self) -> ref.FFNStats | None:
        """Statistics of the last forward that tracked them (track_stats or a hook; computed when read: no
        sync in forward)."""
        if self._last_counts is None:
            return None
        return ref.FFNStats.from_counts(*self._last_counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float("x", x)
        check_ndim("x", x, min_ndim=1)
        if x.shape[-1] != self.d:
            raise ValueError(f"x: last dimension must be d={self.d}, got shape {tuple(x.shape)}")
        if x.ndim == 1:
            raise ValueError(f"x must have a token dimension: shape [..., tokens, {self.d}], got 1-D {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2, w1, w2, b1, b2 = _autocast_inputs(x.reshape(-1, self.d), *self.ffn_weights())
        want_stats = self.track_stats or self._num_stats_hooks > 0
        with _autocast_disabled(x.device.type):
            y, counts = self._run(x2, w1, w2, b1, b2, want_stats)
        if want_stats and counts is not None:
            # kept by calls that do not track them: a CUDA-graph replay of a tracking call refreshes these
            # tensors without running this code (train/graphed_step.py)
            self._last_counts = (x2.shape[0], *counts)
            if self._num_stats_hooks:
                _run_stats_hooks_eagerly(self)
        return y.reshape(*lead, self.d)

    def _run(self, x, w1, w2, b1, b2, want_stats):
        ref.check_ffn_args(x, w1, w2)
        ref.check_ffn_biases(b1, b2, w1)
        if not self.sparse:
            return self._dense(x, w1, w2, b1, b2, want_stats)
        training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w1, w2, b1, b2))
        # in train mode the 2:4 recipe runs at every size with or without autograd: reentrant activation
        # checkpointing runs the first forward under no_grad, and the recomputation must compute the same
        # (decided by the mode, not by requires_grad: under autocast the weights here are no_grad copies)
        learning = training or self.training
        dense_by_size = not learning and not dispatch.use_sparse(x.shape[0], self.d, self.hidden)
        if dense_by_size and x.is_cuda:
            # below the dispatch threshold a GPU runs inference densely on every backend: decided before
            # sparse_path, whose lookups cost ~1.5% of a decode step's host time on the H200 (so the
            # backend's self-check and any fallback warning come with the first call above it)
            return self._dense(x, w1, w2, b1, b2, want_stats)
        exact = learning or dispatch.sparse_threshold() == 0  # 0: "2:4 wherever it can run", e.g. evaluation
        path = sparse_path(x.device, x.dtype, exact, self.d, self.hidden, training and b1 is not None)
        # inference (eval mode) takes the dense path where it is faster; training keeps the 2:4 recipe
        # at every size, so what a model learns does not depend on the batch shape
        if path == "dense":  # a GPU below the threshold already returned above
            return self._dense(x, w1, w2, b1, b2, want_stats)
        y, counts = self._sparse(path, training, x, w1, w2, b1, want_stats)
        return (y if b2 is None else y + b2), counts

    def _sparse(self, path, training, x, w1, w2, b1, want_stats):
        if path == "recipe":
            y, kept, nnz = recipe_ops.sparse_ffn(x, w1, w2, b1, self._perm_seed_tensor, self.num_dense_features)
            return y, (kept, nnz)
        from . import fast_forward  # needs Triton: imported only on the fast backend

        if training:
            y, kept, nonzeros = fast_forward.sparse_train_forward(x, w1, w2, self._perm_seed_tensor,
                                                                  self.num_dense_features)
        else:
            y, kept, nonzeros = fast_forward.sparse_forward(x, w1, w2, b1, count=want_stats)
        return y, ((kept, nonzeros.sum()) if want_stats else None)  # no reduction on the hot path

    @staticmethod
    def _dense(x, w1, w2, b1, b2, want_stats):
        y2 = ref.squared_relu(F.linear(x, w1, b1))
        counts = ref.activation_counts(y2.detach()) if want_stats else None
        return F.linear(y2, w2, b2), counts


class _StatsHookHandle(RemovableHandle):
    """A hook handle that also keeps the module's hook count (which torch.compile guards on) in step."""

    def __init__(self, module: SquaredReLUFFNBase):
        super().__init__(module._stats_hooks)
        self._module = weakref.ref(module)

    def remove(self) -> None:
        super().remove()
        module = getattr(self, "_module", lambda: None)()  # a copied handle (RemovableHandle's pickling) has none
        if module is not None:
            module._num_stats_hooks = len(module._stats_hooks)


def _run_stats_hooks_eagerly(module: SquaredReLUFFNBase) -> None:
    """Outside any compiled graph: the statistics are read on the host, so they synchronise."""
    stats = module.last_stats
    for hook in list(module._stats_hooks.values()):
        hook(module, stats)


_EAGER_HOOKS = ("act24's stats hooks run eagerly (they read the statistics on the host): compile without "
                "fullgraph=True, or read module.last_stats (track_stats=True) after the call instead")
try:
    _run_stats_hooks_eagerly = torch.compiler.disable(_run_stats_hooks_eagerly, reason=_EAGER_HOOKS)
except TypeError:  # torch before 2.8 takes no reason
    _run_stats_hooks_eagerly = torch.compiler.disable(_run_stats_hooks_eagerly)


class SquaredReLUFFN(SquaredReLUFFNBase):
    """y = relu(x @ w1.T)**2 @ w2.T, with 2:4 activation sparsity when `sparse` is True.

    Weights are shaped like nn.Linear's: w1 [hidden, d], w2 [d, hidden]. The options are
    SquaredReLUFFNBase's.
    """

    def __init__(self, d: int, hidden: int, *, device=None, dtype=None, **options):
        super().__init__(d, hidden, **options)
        self.w1 = nn.Parameter(torch.empty(hidden, d, device=device, dtype=dtype))
        self.w2 = nn.Parameter(torch.empty(d, hidden, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default initialisation
        nn.init.kaiming_uniform_(self.w1, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.w2, a=math.sqrt(5))

    def ffn_weights(self):
        return self.w1, self.w2, None, None
