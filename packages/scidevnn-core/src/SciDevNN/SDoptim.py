"""The course's optimizers: ``step(weights, grad)`` returns the updated weights.

Both run the core optimizers (``scidevnn.SGD``, ``scidevnn.Adam``) on one parameter, so they
follow ``torch.optim.SGD`` and ``torch.optim.Adam`` step after step. An instance keeps the
state of ONE tensor (Adam's moments and step count); a course module deep-copies the optimizer
it is given once per parameter.
"""

from __future__ import annotations

import scidevnn
from scidevnn.parameter import Parameter
from SciDevNN.SDbase import Optimizer

__all__ = ["Adam", "GradientDescend", "Optimizer"]


class GradientDescend(Optimizer):
    """Plain gradient descent: ``w - lr * grad`` (``torch.optim.SGD`` without momentum)."""

    def __init__(self, lr: float = 1e-3) -> None:
        if lr < 0:
            raise ValueError(f"GradientDescend: invalid learning rate: {lr}")
        super().__init__()
        self.lr = lr

    def make_optimizer(self, param: Parameter) -> scidevnn.Optimizer:
        return scidevnn.SGD([param], lr=self.lr)


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam(lr=lr, betas=betas, eps=eps)``, moments kept between steps."""

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if lr < 0:
            raise ValueError(f"Adam: invalid learning rate: {lr}")
        if eps < 0:
            raise ValueError(f"Adam: invalid epsilon value: {eps}")
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas}")
        super().__init__()
        self.lr = lr
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = eps

    def make_optimizer(self, param: Parameter) -> scidevnn.Optimizer:
        return scidevnn.Adam([param], lr=self.lr, betas=self.betas, eps=self.eps)
