"""Flatten and Identity: layers that move no numbers, only shapes."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from scidevnn.module import Module


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` into one: (N, C, H, W) -> (N, C*H*W) by default.

    Backward: ``dL/dx = g`` reshaped back to the input's shape.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        self.save_for_backward(x.shape)
        return x.flatten(self.start_dim, self.end_dim)

    def backward(self, grad_output: Tensor) -> Tensor | None:
        (shape,) = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        return grad_output.reshape(shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """``y = x``; any arguments are accepted and ignored, as in torch. Backward: ``dL/dx = g``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        self.save_for_backward()
        return x

    def backward(self, grad_output: Tensor) -> Tensor | None:
        self.saved_tensors()
        if not self.needs_input_grad:
            return None
        return grad_output
