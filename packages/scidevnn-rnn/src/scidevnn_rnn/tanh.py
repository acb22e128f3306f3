"""Tanh: the hyperbolic tangent, element by element."""

from __future__ import annotations

from torch import Tensor

from scidevnn.module import Module


class Tanh(Module):
    """``y = tanh(x)``.

    Shapes: x (*) -> y (*), any shape. Backward: ``dL/dx = dL/dy * (1 - y^2)``, computed from the
    saved output (no second ``tanh``).
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        y = x.tanh()
        self.save_for_backward(y)
        return y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        (y,) = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        grad_input: Tensor = grad_output * (1 - y * y)
        return grad_input
