"""The course's core modules: Linear, Softmax, Sigmoid, MSE, CrossEntropy.

Each is a thin wrapper (``SDbase``) around the core layer of the same job; the core's built-in
plugin registers them, so ``SciDevNN.SDmodules`` finds them like any plugin's course class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

import scidevnn
from SciDevNN import SDbase


class Linear(SDbase.Module):
    """``y = x W + b`` with the course's layout: ``W`` (in, out), ``b`` (out,).

    Wraps ``scidevnn.Linear`` (weight (out, in) = W^T, as torch). Input (N, in) or (in,).
    ``init={'W': (in, out), 'b': (out,)}`` sets the weights (copied; the layer takes W's
    dtype); ``get_grad_test()`` gives ``{'gradW': (out, in), 'gradB': (out,), 'gradOut': like
    x}``, i.e. torch's ``weight.grad``, ``bias.grad`` and the input's grad ('gradB' only with
    a bias).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: Mapping[str, Any] | None = None,
        optimizer: SDbase.Optimizer | None = None,
    ) -> None:
        layer = scidevnn.Linear(in_features, out_features, bias=bias, dtype=SDbase.init_dtype(init))
        super().__init__(layer, optimizer)
        self.linear = layer
        self.load_init(
            init,
            {
                "W": ("weight", torch.t, (in_features, out_features)),
                "b": ("bias", None, (out_features,)),
            },
        )

    @property
    def W(self) -> Tensor:  # noqa: N802 - the course's name
        """The weights in the course's layout (in, out): a view of the core weight."""
        return self.linear.weight.data.t()

    @property
    def b(self) -> Tensor | None:
        return None if self.linear.bias is None else self.linear.bias.data

    def check_input(self, *inputs: Any) -> None:
        (x,) = inputs
        if x.dim() not in (1, 2) or x.shape[-1] != self.linear.in_features:
            raise ValueError(
                f"Linear: expected input of shape (N, {self.linear.in_features}) or "
                f"({self.linear.in_features},), got {tuple(x.shape)}"
            )

    def get_grad_test(self) -> dict[str, Tensor | None]:
        grads: dict[str, Tensor | None] = {"gradW": self.linear.weight.grad}
        if self.linear.bias is not None:
            grads["gradB"] = self.linear.bias.grad
        grads["gradOut"] = self.grad_input
        return grads


class Softmax(SDbase.Module):
    """Softmax as torch's ``nn.Softmax()`` with no ``dim``: dim 0 for 0-, 1- and 3-D input, else 1.

    ``get_grad_test()`` returns the input gradient of the last backward.
    """

    def __init__(self) -> None:
        super().__init__(scidevnn.Softmax())


class Sigmoid(SDbase.Module):
    """``1 / (1 + exp(-x))`` element-wise; ``get_grad_test()`` returns the input gradient."""

    def __init__(self) -> None:
        super().__init__(scidevnn.Sigmoid())


class MSE(SDbase.Loss):
    """Mean squared error, as ``torch.nn.MSELoss()``; ``backward(x, y)`` returns dL/dx."""

    def __init__(self) -> None:
        super().__init__(scidevnn.MSELoss())


class CrossEntropy(SDbase.Loss):
    """Cross-entropy of logits x (N, C) or (C,) and class indices y: ``nn.CrossEntropyLoss()``."""

    def __init__(self) -> None:
        super().__init__(scidevnn.CrossEntropyLoss())
