"""Small helpers shared by the recurrent layers: gradient accumulation and argument checks."""

from __future__ import annotations

from torch import Tensor

from scidevnn.errors import BackwardError
from scidevnn.parameter import Parameter


def accumulate_matmul(param: Parameter, a: Tensor, b: Tensor) -> None:
    """``param.grad += a @ b``, fused into one ``addmm_`` once the gradient exists."""
    if param.grad is None:
        param.accumulate(a @ b)
    else:
        param.grad.addmm_(a, b)


def accumulate_bias(params: tuple[Parameter | None, ...], grad: Tensor) -> None:
    """Add ``grad`` into every (non-None) parameter; each first use gets its own copy."""
    first = True
    for param in params:
        if param is None:
            continue
        if param.grad is None:
            param.accumulate(grad if first else grad.clone())
            first = False
        else:
            param.grad.add_(grad)


def check_grad_shape(layer: str, what: str, grad: Tensor | None, shape: tuple[int, ...]) -> None:
    """A gradient must have the shape of the output it belongs to (``None`` means zeros)."""
    if grad is not None and tuple(grad.shape) != shape:
        raise BackwardError(
            f"{layer}.backward: {what} has shape {tuple(grad.shape)}, expected {shape}"
        )
