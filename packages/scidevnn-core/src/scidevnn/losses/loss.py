"""Loss: the base of every criterion, a module whose backward starts the backward pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scidevnn.errors import BackwardError
from scidevnn.module import Module

REDUCTIONS = ("mean", "sum", "none")


class Loss(Module):
    """``loss = criterion(prediction, target)``, then ``criterion.backward()`` gives dL/dprediction.

    ``reduction`` is ``'mean'`` or ``'sum'`` (a 0-dim loss) or ``'none'`` (one loss per
    element). ``backward(grad_output)`` takes dL/dloss, of the loss's shape; it defaults to 1,
    so ``criterion.backward()`` after a reduced loss gives the gradient of the loss itself.
    Like every module, forward calls are stacked and each backward consumes the most recent.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output: Tensor | float | None = None) -> Tensor | None:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, prediction: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        return self.forward(prediction, target, **kwargs)

    def _grad_of_loss(
        self, grad_output: Tensor | float | None, loss_shape: torch.Size, like: Tensor
    ) -> Tensor:
        """dL/dloss as a tensor of ``loss_shape`` ('none') or 0-dim, on ``like``'s device."""
        if grad_output is None:
            return torch.ones(loss_shape, dtype=like.dtype, device=like.device)
        grad = torch.as_tensor(grad_output, device=like.device)
        if grad.shape != loss_shape:
            raise BackwardError(
                f"{type(self).__name__}.backward: grad_output of shape {tuple(grad.shape)} "
                f"does not match the loss's shape {tuple(loss_shape)}"
            )
        return grad
