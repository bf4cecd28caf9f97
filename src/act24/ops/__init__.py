"""torch.library custom ops over the kernels and the sparse GEMM (opaque to torch.compile, with fake impls)."""

from .sparse_ffn_ops import sparse_mm, sparsify_pack

__all__ = ["sparse_mm", "sparsify_pack"]
