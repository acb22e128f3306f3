"""MSELoss: the mean (or sum) of squared differences."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from scidevnn.losses.loss import Loss


class MSELoss(Loss):
    """``l_i = (x_i - y_i)^2``, reduced by ``reduction`` ('mean' over all elements, 'sum', 'none').

    Shapes: prediction x and target y of one shape (broadcasting is allowed, with torch's
    warning); the loss is 0-dim, or of the broadcast shape for 'none'.
    Backward: ``dL/dx = 2 (x - y) g`` (divided by the element count for 'mean'), summed back to
    x's shape where y broadcast it.
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(f"MSELoss: target must be a Tensor, got {type(target).__name__}")
        try:
            diff = prediction - target
        except RuntimeError:
            raise ValueError(
                f"MSELoss: target shape {tuple(target.shape)} does not match prediction "
                f"shape {tuple(prediction.shape)}"
            ) from None
        if target.shape != prediction.shape:
            warnings.warn(
                f"MSELoss: target shape {tuple(target.shape)} differs from prediction shape "
                f"{tuple(prediction.shape)}; they are broadcast, which is likely a mistake",
                UserWarning,
                stacklevel=2,
            )
        self.save_for_backward(diff, prediction.shape, prediction.dtype)
        squared = diff.square()
        if self.reduction == "none":
            return squared
        return squared.mean() if self.reduction == "mean" else squared.sum()

    def backward(self, grad_output: Tensor | float | None = None) -> Tensor | None:
        diff: Tensor
        diff, shape, dtype = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        loss_shape = diff.shape if self.reduction == "none" else torch.Size()
        grad = self._grad_of_loss(grad_output, loss_shape, diff)
        scale = 2.0 / diff.numel() if self.reduction == "mean" else 2.0
        result = diff * (grad * scale)
        if result.shape != shape:
            result = result.sum_to_size(shape)
        return result.to(dtype)
