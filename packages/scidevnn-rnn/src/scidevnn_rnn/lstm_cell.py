"""LSTMCell: one long short-term memory step, and the gate arithmetic LSTM reuses.

With pre-activations ``a = x W_ih^T + b_ih + h W_hh^T + b_hh`` split in torch's gate order
``i, f, g, o`` (each ``hidden`` wide)::

    i, f, o = sigmoid(a_i, a_f, a_o)     g = tanh(a_g)
    c' = f * c + i * g                   h' = o * tanh(c')

Backward, from ``dh'`` and ``dc'`` (with ``tc = tanh(c')``)::

    dc = dc' + dh' * o * (1 - tc^2)      (the cell gradient reaching c')
    do = dh' * tc    di = dc * g    df = dc * c    dg = dc * i    dc_prev = dc * f
    da = (di, df, dg, do) * (i(1-i), f(1-f), 1-g^2, o(1-o))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scidevnn_rnn._common import check_grad_shape
from scidevnn_rnn.cell_base import RNNCellBase

LSTMState = tuple[Tensor, Tensor]


def lstm_gates_forward(
    gates: Tensor, c_prev: Tensor | None, c_out: Tensor, tc_out: Tensor, h_out: Tensor
) -> None:
    """Turn pre-activations (..., 4H) into gate activations in place; write c', tanh(c'), h'.

    ``c_prev=None`` means a zero cell state.
    """
    hidden = c_out.shape[-1]
    gates[..., : 2 * hidden].sigmoid_()
    gates[..., 2 * hidden : 3 * hidden].tanh_()
    gates[..., 3 * hidden :].sigmoid_()
    i, f, g, o = gates.chunk(4, dim=-1)
    if c_prev is None:
        torch.mul(i, g, out=c_out)
    else:
        torch.mul(f, c_prev, out=c_out)
        c_out.addcmul_(i, g)
    torch.tanh(c_out, out=tc_out)
    torch.mul(o, tc_out, out=h_out)


def lstm_backward_coefficients(acts: Tensor, tc: Tensor) -> tuple[Tensor, Tensor]:
    """Derivatives that do not depend on the incoming gradient, for any number of steps.

    Returns ``D`` (..., 4H): d activation / d pre-activation of each gate, and
    ``OTD`` (..., H) = ``o * (1 - tanh(c')^2)``, d h' / d c'.
    """
    hidden = tc.shape[-1]
    deriv = acts * (1 - acts)
    g = acts[..., 2 * hidden : 3 * hidden]
    g_slot = deriv[..., 2 * hidden : 3 * hidden]
    torch.mul(g, g, out=g_slot)
    g_slot.neg_().add_(1)
    o_tanh_deriv = acts[..., 3 * hidden :] * (1 - tc * tc)
    return deriv, o_tanh_deriv


def lstm_step_backward(
    dh: Tensor,
    dc: Tensor | None,
    acts: Tensor,
    tc: Tensor,
    c_prev: Tensor | None,
    deriv: Tensor,
    o_tanh_deriv: Tensor,
    out: Tensor,
) -> Tensor:
    """Write d loss / d pre-activations (..., 4H) into ``out``; return d loss / d c_prev.

    ``dh``, ``dc``: gradients reaching h' and c' (``dc=None``: zero); ``c_prev=None``: the
    step started from a zero cell state.
    """
    i, f, g, _ = acts.chunk(4, dim=-1)
    out_i, out_f, out_g, out_o = out.chunk(4, dim=-1)
    torch.mul(dh, tc, out=out_o)
    dc_total = dh * o_tanh_deriv if dc is None else torch.addcmul(dc, dh, o_tanh_deriv)
    torch.mul(dc_total, g, out=out_i)
    if c_prev is None:
        out_f.zero_()
    else:
        torch.mul(dc_total, c_prev, out=out_f)
    torch.mul(dc_total, i, out=out_g)
    out.mul_(deriv)
    return dc_total.mul_(f)


class LSTMCell(RNNCellBase):
    """One LSTM step: ``(h', c') = LSTMCell(x, (h, c))``; formulas in the module docstring.

    Shapes: x (N, input_size) or (input_size,); h, c, h', c' (N, hidden_size) or
    (hidden_size,); ``hx=None`` means zero states. Parameters as torch: ``weight_ih``
    (4*hidden, input), ``weight_hh`` (4*hidden, hidden), ``bias_ih``, ``bias_hh`` (4*hidden,),
    gate order i, f, g, o.

    ``backward((grad_h', grad_c'))`` returns ``(grad_x, (grad_h, grad_c))``; a ``None``
    gradient means zeros. ``grad_x`` is None when ``needs_input_grad`` is off, ``grad_h`` and
    ``grad_c`` when the forward had no ``hx``. Weight gradients: with ``da`` the gradient of
    the pre-activations, dW_ih += da^T x, dW_hh += da^T h, db_ih = db_hh += sum_rows da,
    grad_x = da W_ih, grad_h = da W_hh. Apply the cell at every step of a sequence, then call
    backward once per step in reverse order: parameter gradients add up over the steps.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device=device, dtype=dtype)

    def forward(self, x: Tensor, hx: Sequence[Tensor] | None = None) -> LSTMState:
        batched = self.check_input(x)
        h: Tensor | None = None
        c: Tensor | None = None
        if hx is not None:
            if len(hx) != 2:
                raise ValueError("LSTMCell: hx must be a pair (h, c)")
            h, c = hx
            self.check_state(h, x, "h")
            self.check_state(c, x, "c")
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        if not batched:
            x = x.unsqueeze(0)
        gates = self.input_projection(x, fold_hidden_bias=True)
        if h is not None:
            gates.addmm_(h, self.weight_hh.data.t())
        shape = (x.shape[0], self.hidden_size)
        c_new = gates.new_empty(shape)
        tc = gates.new_empty(shape)
        h_new = gates.new_empty(shape)
        lstm_gates_forward(gates, c, c_new, tc, h_new)
        self.save_for_backward(x, h, c, gates, tc, batched)
        if not batched:
            return h_new.squeeze(0), c_new.squeeze(0)
        return h_new, c_new

    def backward(
        self, grad_output: Sequence[Tensor | None] | None
    ) -> tuple[Tensor | None, tuple[Tensor | None, Tensor | None]]:
        x, h, c, acts, tc, batched = self.saved_tensors()
        grad_h, grad_c = (None, None) if grad_output is None else grad_output
        shape = tuple(tc.shape) if batched else (self.hidden_size,)
        check_grad_shape("LSTMCell", "grad_h", grad_h, shape)
        check_grad_shape("LSTMCell", "grad_c", grad_c, shape)
        if not batched:
            grad_h = None if grad_h is None else grad_h.unsqueeze(0)
            grad_c = None if grad_c is None else grad_c.unsqueeze(0)
        if grad_h is None:
            grad_h = torch.zeros_like(tc)
        deriv, o_tanh_deriv = lstm_backward_coefficients(acts, tc)
        grad_gates = torch.empty_like(acts)
        grad_c_prev = lstm_step_backward(
            grad_h, grad_c, acts, tc, c, deriv, o_tanh_deriv, grad_gates
        )
        self.accumulate_weight_grads(grad_gates, grad_gates, x, h)
        grad_x = grad_gates @ self.weight_ih.data if self.needs_input_grad else None
        grad_h_prev = grad_gates @ self.weight_hh.data if h is not None else None
        grad_c_out = grad_c_prev if c is not None else None
        if not batched:
            grad_x = None if grad_x is None else grad_x.squeeze(0)
            grad_h_prev = None if grad_h_prev is None else grad_h_prev.squeeze(0)
            grad_c_out = None if grad_c_out is None else grad_c_out.squeeze(0)
        return grad_x, (grad_h_prev, grad_c_out)
