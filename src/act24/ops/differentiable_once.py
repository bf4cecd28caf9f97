"""Backward ops that refuse a second derivative with a message that says so."""

from __future__ import annotations


def refuse_double_backward(backward_op, ffn: str) -> None:
    """Register an autograd formula on `backward_op` that raises when a second derivative flows through
    it, instead of torch's "no autograd formula" error. Recording it (create_graph=True) is fine: the
    gradient may be needed only for other parameters, or not at all."""
    def second_derivative(ctx, *grads):
        raise RuntimeError(f"{ffn} is differentiable once: a second derivative through it (double backward, "
                           "gradient penalties) is not supported; run that part of the model densely (sparse=False)")

    backward_op.register_autograd(second_derivative, setup_context=lambda ctx, inputs, output: None)
