"""RNNCell: one Elman step, ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``."""

from __future__ import annotations

import torch
from torch import Tensor

from scidevnn_rnn.cell_base import RNNCellBase

NONLINEARITIES = ("tanh", "relu")


def check_nonlinearity(layer: str, nonlinearity: str) -> None:
    """Raise ValueError naming ``layer`` unless ``nonlinearity`` is 'tanh' or 'relu'."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"{layer}: unknown nonlinearity '{nonlinearity}'; select from 'tanh' or 'relu'"
        )


def activate_(pre: Tensor, nonlinearity: str) -> Tensor:
    """Apply tanh or relu to the pre-activation in place; returns it."""
    return pre.tanh_() if nonlinearity == "tanh" else pre.relu_()


def activation_backward(grad: Tensor, h: Tensor, nonlinearity: str, out: Tensor) -> Tensor:
    """d loss / d pre-activation into ``out``, from the output ``h``: ``g (1 - h^2)`` for tanh,
    ``g [h > 0]`` for relu."""
    if nonlinearity == "tanh":
        return torch.addcmul(grad, grad * h, h, value=-1, out=out)
    return torch.mul(grad, h > 0, out=out)


class RNNCell(RNNCellBase):
    """``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, act = tanh or relu.

    Shapes: x (N, input_size) or (input_size,); h, h' (N, hidden_size) or (hidden_size,).
    ``h=None`` means zeros. Parameters as torch: ``weight_ih`` (hidden, input), ``weight_hh``
    (hidden, hidden), ``bias_ih``, ``bias_hh`` (hidden,).

    ``backward(grad_h')`` returns ``(grad_x, grad_h)``. With ``g = grad_h' * act'``:
    dW_ih += g^T x, dW_hh += g^T h, db_ih = db_hh += sum_rows g, grad_x = g W_ih,
    grad_h = g W_hh. ``grad_x`` is None when ``needs_input_grad`` is off, ``grad_h`` when the
    forward had no ``h``. Apply it at every step of a sequence, then call backward once per step
    in reverse order: each call pairs with its own step and parameter gradients add up.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_nonlinearity("RNNCell", nonlinearity)
        super().__init__(input_size, hidden_size, bias, 1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        batched, x, (hx,) = self.as_batch(x, hx=hx)
        h_new = self.input_projection(x, fold_hidden_bias=True)
        if hx is not None:
            h_new.addmm_(hx, self.weight_hh.data.t())
        activate_(h_new, self.nonlinearity)
        self.save_for_backward(x, hx, h_new, batched)
        return h_new if batched else h_new.squeeze(0)

    def backward(self, grad_output: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        x, h, h_new, batched = self.saved_tensors()
        (grad_output,) = self.as_batch_grads(batched, x.shape[0], grad_h=grad_output)
        if grad_output is None:
            grad_output = torch.zeros_like(h_new)
        grad_pre = activation_backward(
            grad_output, h_new, self.nonlinearity, torch.empty_like(h_new)
        )
        grad_x = self.accumulate_grads(grad_pre, grad_pre, x, h)
        grad_h = grad_pre @ self.weight_hh.data if h is not None else None
        grad_x, grad_h = self.unbatch(batched, grad_x, grad_h)
        return grad_x, grad_h

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.nonlinearity != "tanh":
            text += f", nonlinearity={self.nonlinearity}"
        return text
