"""Sigmoid, Softmax and LogSoftmax: element-wise and normalising activations."""

from __future__ import annotations

import torch
from torch import Tensor

from scidevnn.module import Module


def implicit_softmax_dim(ndim: int) -> int:
    """The dimension torch's ``Softmax(dim=None)`` picks: 0 for 0-, 1- and 3-D input, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


def _row_max(x: Tensor, dim: int) -> Tensor:
    """Max along ``dim`` (kept): the shift that keeps ``exp`` finite; empty input stays empty."""
    if x.numel() == 0:
        return x.sum(dim, keepdim=True)
    return x.amax(dim, keepdim=True)


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``, element-wise; any shape.

    Backward: ``dL/dx = g * y * (1 - y)``.
    """

    def forward(self, x: Tensor) -> Tensor:
        y = torch.sigmoid(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        y: Tensor
        (y,) = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        return grad_output * y * (1.0 - y)


class Softmax(Module):
    """``y_i = exp(x_i - max x) / sum_j exp(x_j - max x)`` along ``dim``; any shape.

    ``dim=None`` follows torch's implicit rule (see ``implicit_softmax_dim``).
    Backward: ``dL/dx = y * (g - sum_dim(g * y))``.
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        dim = implicit_softmax_dim(x.dim()) if self.dim is None else self.dim
        y = x - _row_max(x, dim)
        y.exp_()
        y.div_(y.sum(dim, keepdim=True))
        self.save_for_backward(y, dim)
        return y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        y: Tensor
        y, dim = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        gy = grad_output * y
        return gy.sub_(y * gy.sum(dim, keepdim=True))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``y_i = (x_i - max x) - log sum_j exp(x_j - max x)`` along ``dim``; any shape.

    ``dim=None`` follows torch's implicit rule (see ``implicit_softmax_dim``).
    Backward: ``dL/dx = g - exp(y) * sum_dim(g)``.
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        dim = implicit_softmax_dim(x.dim()) if self.dim is None else self.dim
        y = x - _row_max(x, dim)
        y.sub_(y.exp().sum(dim, keepdim=True).log_())
        self.save_for_backward(y, dim)
        return y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        y: Tensor
        y, dim = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        return grad_output - y.exp() * grad_output.sum(dim, keepdim=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
