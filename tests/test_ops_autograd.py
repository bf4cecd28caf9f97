"""Autograd of the forward custom ops, on CPU (kernels in the interpreter, the 2:4 GEMM decoded)."""

import pytest
import torch

from act24 import reference as ref
from act24.ops import sparse_ffn_ops
from act24.reference.cusparselt_layout import unpack_dense
from conftest import decoded_mm


@pytest.fixture
def decoded_gemm(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CPU stand-in for the cuSPARSELt GEMM")
    monkeypatch.setattr("act24.gemm.cusparselt.sparse_mm", decoded_mm)


def test_sparse_mm_gradient_for_the_dense_operand(decoded_gemm):
    y1 = torch.randn(64, 128).to(torch.bfloat16)
    packed, _, _ = sparse_ffn_ops.sparsify_pack(y1)
    y2 = ref.squared_relu(y1)
    a = ref.masked_activation(y2)
    assert torch.equal(unpack_dense(packed, 64, 128), a)
    b = torch.randn(128, 32, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(64, 32, dtype=torch.bfloat16)
    sparse_ffn_ops.sparse_mm(packed, b, 64).backward(grad)
    torch.testing.assert_close(b.grad, a.t() @ grad)


def test_sparsify_pack_refuses_a_backward_with_a_clear_message(decoded_gemm):
    y1 = torch.randn(64, 128, dtype=torch.bfloat16, requires_grad=True)
    packed, _, _ = sparse_ffn_ops.sparsify_pack(y1)
    with pytest.raises(RuntimeError, match="bit-packed operand, which has no gradient"):
        packed.float().sum().backward()
