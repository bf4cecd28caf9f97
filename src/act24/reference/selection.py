"""2:4 selection masks: token-wise (forward) and feature-wise (weight gradients).

Policy, shared by every kernel: in each group of 4 keep the 2 largest magnitudes;
equal magnitudes keep the lower index; NaN ranks like ±Inf, larger than any finite number
(ties keep the lower index): it is kept and propagates instead of being silently dropped.
Every group keeps exactly 2 positions, even when fewer than 2 values are non-zero.
"""

from __future__ import annotations

import torch

from .checks import check_float, check_multiple, check_ndim

GROUP = 4


def _rank_key(values: torch.Tensor) -> torch.Tensor:
    key = values.abs()
    return torch.where(torch.isnan(key), torch.full_like(key, float("inf")), key)


def top2_of_4(groups: torch.Tensor) -> torch.Tensor:
    """Mask of the 2 winners in each group along the last dim (size 4)."""
    key = _rank_key(groups)
    a = key.unsqueeze(-1)  # candidate i
    b = key.unsqueeze(-2)  # competitor j
    idx = torch.arange(GROUP, device=groups.device)
    lower = idx.view(1, GROUP) < idx.view(GROUP, 1)  # [i, j]: j < i
    # j beats i if strictly larger, or equal with a lower index (inf == inf counts as equal)
    beaten = (b > a) | ((b == a) & lower)
    return beaten.sum(-1) < 2


def tokenwise_mask(y: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest of every 4 consecutive values along the last dimension."""
    check_float("y", y)
    check_ndim("y", y, min_ndim=2)
    check_multiple("y", y.shape[-1], GROUP, "the last (feature) dimension")
    groups = y.reshape(*y.shape[:-1], y.shape[-1] // GROUP, GROUP)
    return top2_of_4(groups).reshape(y.shape)


def masked_activation(y: torch.Tensor) -> torch.Tensor:
    """y under the token-wise mask: the values the 2:4 forward keeps, zeros elsewhere."""
    return torch.where(tokenwise_mask(y), y, torch.zeros((), dtype=y.dtype, device=y.device))


def padded_token_count(num_tokens: int) -> int:
    """Tokens are grouped in fours along the feature-wise path: T rounded up to a multiple of 4."""
    return num_tokens + (-num_tokens) % GROUP


def check_permutation(perm: torch.Tensor, num_tokens: int) -> None:
    if perm.dtype not in (torch.int64, torch.int32) or perm.shape != (num_tokens,):
        raise ValueError(f"perm must be an int64/int32 tensor of shape ({num_tokens},), got {perm.dtype} {tuple(perm.shape)}")
    if not torch.equal(perm.sort().values, torch.arange(num_tokens, device=perm.device, dtype=perm.dtype)):
        raise ValueError(f"perm must be a permutation of range({num_tokens}) (each token exactly once)")


def token_permutation(num_tokens: int, seed: int, device=None) -> torch.Tensor:
    """Fixed random order in which tokens are grouped in fours (a bijection of range(T))."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(num_tokens, generator=gen).to(device)


_perm_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def cached_token_permutation(num_tokens: int, seed: int, device: torch.device) -> torch.Tensor:
    """token_permutation(T rounded up to a multiple of 4, seed) on `device`; the last few are cached."""
    key = (padded_token_count(num_tokens), int(seed), torch.device(device))
    if key not in _perm_cache:
        # one entry per (length, layer seed): room for deep models (a miss costs a host-to-device copy,
        # which a CUDA-graph capture cannot take); variable lengths must not grow it without bound
        if len(_perm_cache) >= 256:
            _perm_cache.pop(next(iter(_perm_cache)))
        _perm_cache[key] = token_permutation(key[0], key[1], key[2])
    return _perm_cache[key]


def featurewise_mask(masked: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """2:4 along tokens: per feature, keep the 2 largest of each group of 4 tokens.

    `masked` [T, H] must already carry the forward (token-wise) mask, i.e. be zero
    where the forward dropped a value: selecting by magnitude on it can then never
    re-admit a dropped value. Tokens are grouped as perm[0:4], perm[4:8], ...
    Returns a bool mask [T, H] in the original token order.
    """
    check_float("masked", masked)
    check_ndim("masked", masked, ndim=2)
    T, H = masked.shape
    check_multiple("masked", T, GROUP, "the token count (dim 0) for the feature-wise 2:4 path")
    check_permutation(perm, T)
    return top2_along_tokens(masked, perm)


def top2_along_tokens(masked: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """featurewise_mask without its argument checks, for callers whose perm is already valid
    (the permutation check sorts and syncs with the host)."""
    T, H = masked.shape
    grouped = masked[perm].reshape(T // GROUP, GROUP, H).transpose(1, 2)  # [T/4, H, 4]
    keep_grouped = top2_of_4(grouped).transpose(1, 2).reshape(T, H)
    return torch.zeros_like(keep_grouped).index_copy_(0, perm.long(), keep_grouped)


def dense_feature_count(hidden: int, fraction: float, multiple: int = 1) -> int:
    """Number of features left dense: fraction of hidden, rounded up to `multiple`, at most hidden."""
    if isinstance(fraction, (bool, str, bytes)):
        raise TypeError(f"dense_fraction must be a number in [0, 1], got {fraction!r}")
    try:
        fraction = float(fraction)  # numpy and 0-d tensor scalars too
    except (TypeError, ValueError):
        raise TypeError(f"dense_fraction must be a number in [0, 1], got {fraction!r}") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"dense_fraction must be in [0, 1], got {fraction}")
    if fraction == 0.0:
        return 0
    n = -(-int(round(fraction * hidden * 1e6)) // 1_000_000)  # ceil, robust to float noise
    n = -(-n // multiple) * multiple
    return min(n, hidden)


def densest_features(counts: torch.Tensor, num_dense: int, max_count: int | None = None,
                     in_index_order: bool = True) -> torch.Tensor:
    """Indices of the `num_dense` features with the most non-zeros (ties: lower index), in increasing
    order (in_index_order=False: the same indices in the selection's own order, for callers that use
    them as a set).

    max_count: a bound on the counts (e.g. the token count) that lets the selection use 32-bit keys."""
    if num_dense == 0:
        return torch.empty(0, dtype=torch.long, device=counts.device)
    # the top num_dense keys by a radix select (a handful of kernels; two full 64-bit sorts took ~0.35 ms
    # of host time a step), which on 32-bit keys needs half the passes of 64-bit ones
    chosen = density_keys(counts, max_count).topk(num_dense, sorted=False).indices
    return chosen.sort().values if in_index_order else chosen


def density_keys(counts: torch.Tensor, max_count: int | None = None) -> torch.Tensor:
    """One unique key per feature, larger for more counts and then for lower indices; 32-bit where
    `max_count` bounds the counts tightly enough, 64-bit otherwise."""
    h = counts.numel()
    key_dtype = torch.int32 if max_count is not None and (max_count + 1) * h <= 2**31 - 1 else torch.int64
    return counts.to(key_dtype) * h + torch.arange(h - 1, -1, -1, device=counts.device, dtype=key_dtype)
