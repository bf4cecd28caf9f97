"""Backward ops that refuse a second derivative with a message that says so."""

from __future__ import annotations


def refuse_double_backward(backward_op, ffn: str) -> None:
    """Register an autograd formula on `backward_op` that raises as soon as its gradient is asked for
    (backward with create_graph=True records it), instead of torch's "no autograd formula" error."""
    def setup_context(ctx, inputs, output):
        raise RuntimeError(f"{ffn} is differentiable once: double backward (create_graph=True, gradient "
                           "penalties) is not supported; run that part of the model densely (sparse=False)")

    backward_op.register_autograd(lambda ctx, *grads: None, setup_context=setup_context)
