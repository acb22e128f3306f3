"""Parameter: a tensor a module learns, and the gradient its backward accumulates."""

from __future__ import annotations

import torch
from torch import Tensor


class Parameter:
    """A learnable tensor.

    ``data`` holds the value, ``grad`` is ``None`` until a backward pass adds into it.
    Backward passes *accumulate* (``grad += ...``) exactly as torch does, so gradients of a
    module applied several times (weight sharing, time steps) add up; ``zero_grad`` clears them.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: Tensor) -> None:
        self.data: Tensor = data.detach()
        self.grad: Tensor | None = None

    def accumulate(self, grad: Tensor) -> None:
        """Add ``grad`` into ``.grad``.

        On first use ``grad`` itself becomes ``.grad`` (no copy), so pass a fresh tensor that
        nothing else will modify: later accumulations add into it in place.
        """
        if self.grad is None:
            self.grad = grad
        else:
            self.grad.add_(grad)

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def numel(self) -> int:
        return self.data.numel()

    def __repr__(self) -> str:
        return f"Parameter containing:\n{self.data!r}"
