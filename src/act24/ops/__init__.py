"""torch.library custom ops (opaque to torch.compile, with fake impls).

`recipe_ops`: the sparse FFN recipe in plain PyTorch, with registered autograd (any device).
`sparse_ffn_ops`: the Triton packer and the cuSPARSELt GEMM (sm90; imported on demand, needs Triton).
"""

from . import recipe_ops

__all__ = ["recipe_ops"]
