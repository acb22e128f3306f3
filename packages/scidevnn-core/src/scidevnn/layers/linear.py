"""Linear: an affine map, the layer every other network is built around."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scidevnn.module import Module
from scidevnn.parameter import Parameter


class Linear(Module):
    """``y = x W^T + b``.

    Shapes: x (*, in_features) -> y (*, out_features); ``weight`` (out_features, in_features),
    ``bias`` (out_features,). Initialised like torch: U(-1/sqrt(in), 1/sqrt(in)) for both, drawn
    in the same order, so the same seed gives torch's weights.

    Backward, with g = dL/dy flattened to (M, out) and x to (M, in):
    dL/dW = g^T x,  dL/db = sum_rows g,  dL/dx = g W.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # torch's kaiming_uniform_(a=sqrt(5)), computed in the same order so that float64
        # weights equal torch's to the last bit: bound = sqrt(3) * gain / sqrt(fan_in)
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
        w_bound = math.sqrt(3.0) * (gain / math.sqrt(in_features)) if in_features > 0 else 0.0
        weight = torch.empty(out_features, in_features, device=device, dtype=dtype)
        self.weight = Parameter(weight.uniform_(-w_bound, w_bound))
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.bias: Parameter | None
        if bias:
            bias_value = torch.empty(out_features, device=device, dtype=dtype)
            self.bias = Parameter(bias_value.uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}): input of shape "
                f"{tuple(x.shape)} does not end in {self.in_features} features"
            )
        self.save_for_backward(x)
        if self.bias is None:
            return x @ self.weight.data.t()
        if x.dim() == 2:
            return torch.addmm(self.bias.data, x, self.weight.data.t())
        return x @ self.weight.data.t() + self.bias.data

    def backward(self, grad_output: Tensor) -> Tensor | None:
        (x,) = self.saved_tensors()
        g = grad_output.reshape(-1, self.out_features)
        self.weight.accumulate(g.t() @ x.reshape(-1, self.in_features))
        if self.bias is not None:
            self.bias.accumulate(g.sum(0))
        if not self.needs_input_grad:
            return None
        return grad_output @ self.weight.data

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
