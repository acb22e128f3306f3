"""Dropout and Dropout2d: zero elements (or whole channels) at random while training."""

from __future__ import annotations

import torch
from torch import Tensor

from scidevnn.module import Module
from scidevnn_cnn._args import check_grad_shape


def _check_probability(p: float, layer: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{layer}: dropout probability has to be between 0 and 1, but got {p}")


class _DropoutBase(Module):
    """Shared by both: ``y = x * mask / (1 - p)`` in training, ``y = x`` in evaluation.

    The mask is drawn as torch draws it on the CPU (``bernoulli_(1 - p)`` on an uninitialised
    tensor of the mask's shape from the global generator), so after the same
    ``torch.manual_seed`` it equals torch's. ``p = 1`` gives zeros, ``p = 0`` the input itself.
    Backward: dL/dx = dL/dy * mask / (1 - p) (identity in evaluation).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        _check_probability(p, type(self).__name__)
        self.p = p
        self.inplace = inplace

    def _noise(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            self.save_for_backward(None, tuple(x.shape))
            return x
        if self.p == 1.0:
            noise = x.new_zeros(())
        else:
            noise = self._noise(x).bernoulli_(1 - self.p).div_(1 - self.p)
        y = x.mul_(noise) if self.inplace else x * noise
        self.save_for_backward(noise, tuple(x.shape))
        return y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        noise, shape = self.saved_tensors()
        check_grad_shape(grad_output, shape, type(self).__name__)
        if not self.needs_input_grad:
            return None
        return grad_output if noise is None else grad_output * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutBase):
    """Zeroes each element independently with probability ``p``; any shape.

    Mirrors ``torch.nn.Dropout(p=0.5, inplace=False)``; see ``_DropoutBase`` for the formula.
    """

    def _noise(self, x: Tensor) -> Tensor:
        return torch.empty_like(x)


class Dropout2d(_DropoutBase):
    """Zeroes whole channels: one draw per (sample, channel) of an (N, C, H, W) input.

    Mirrors ``torch.nn.Dropout2d(p=0.5, inplace=False)``. A 3-D input is taken as one unbatched
    (C, H, W) image (one draw per channel), the meaning torch documents and plans to adopt;
    torch 2.x still treats it as (N, C, L) with a warning.
    """

    def _noise(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(
                f"{type(self).__name__}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                f"got shape {tuple(x.shape)}"
            )
        if x.dim() == 3:
            return x.new_empty(1, x.shape[0], 1, 1).view(x.shape[0], 1, 1)
        return x.new_empty(x.shape[0], x.shape[1], 1, 1)
