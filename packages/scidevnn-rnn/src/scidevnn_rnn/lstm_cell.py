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
from typing import NamedTuple

import torch
from torch import Tensor

from scidevnn_rnn.cell_base import RNNCellBase, gate_chunks, gate_chunks_per_step

LSTMState = tuple[Tensor, Tensor]


class Gates(NamedTuple):
    """Views of one step's (N, 4H) gate tensor: the whole, ``i`` and ``f`` together, and each.

    Built once per buffer (``gate_views``, ``gate_views_per_step``) so that the per-step loops
    slice nothing.
    """

    all: Tensor
    i_f: Tensor
    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor


def gate_views(buffer: Tensor) -> Gates:
    """Gates of a (..., 4H) tensor."""
    return Gates(*gate_chunks(buffer, 4))


def gate_views_per_step(buffer: Tensor) -> list[Gates]:
    """Gates of each step of a (T, N, 4H) tensor."""
    return [Gates(*step) for step in gate_chunks_per_step(buffer, 4)]


def lstm_gates_forward(
    gates: Gates, c_prev: Tensor | None, c_out: Tensor, tc_out: Tensor, h_out: Tensor
) -> None:
    """Turn the pre-activations in ``gates`` into activations in place; write c', tanh(c'), h'.

    ``c_prev=None`` means a zero cell state.
    """
    gates.i_f.sigmoid_()
    gates.g.tanh_()
    gates.o.sigmoid_()
    if c_prev is None:
        torch.mul(gates.i, gates.g, out=c_out)
    else:
        torch.mul(gates.f, c_prev, out=c_out)
        c_out.addcmul_(gates.i, gates.g)
    torch.tanh(c_out, out=tc_out)
    torch.mul(gates.o, tc_out, out=h_out)


def lstm_step_backward(
    dh: Tensor,
    dc: Tensor | None,
    acts: Gates,
    tc: Tensor,
    c_prev: Tensor | None,
    out: Gates,
    one: Tensor,
) -> Tensor:
    """Write d loss / d pre-activations into ``out``; return d loss / d c_prev.

    ``dh``, ``dc``: gradients reaching h' and c' (``dc=None``: zero); ``c_prev=None``: the
    step started from a zero cell state; ``one``: a scalar tensor 1 of the gates' dtype.
    Every derivative is formed here, from the step's own (cache-resident) activations.
    """
    torch.mul(dh, tc, out=out.o)  # do
    dc_total = dh * acts.o if dc is None else torch.addcmul(dc, dh, acts.o)
    dc_total.addcmul_(out.o * acts.o, tc, value=-1)  # + dh o (1 - tc^2)
    torch.mul(dc_total, acts.g, out=out.i)
    if c_prev is None:
        out.f.zero_()
    else:
        torch.mul(dc_total, c_prev, out=out.f)
    torch.mul(dc_total, acts.i, out=out.g)
    deriv = torch.addcmul(acts.all, acts.all, acts.all, value=-1)  # s (1 - s): i, f, o
    # and 1 - g^2 for g:
    hidden = tc.shape[-1]
    torch.addcmul(one, acts.g, acts.g, value=-1, out=deriv.narrow(-1, 2 * hidden, hidden))
    out.all.mul_(deriv)
    return dc_total.mul_(acts.f)


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
        if hx is not None and len(hx) != 2:
            raise ValueError("LSTMCell: hx must be a pair (h, c)")
        h, c = (None, None) if hx is None else hx
        batched, x, (h, c) = self.as_batch(x, h=h, c=c)
        gates = self.input_projection(x, fold_hidden_bias=True)
        if h is not None:
            gates.addmm_(h, self.weight_hh.data.t())
        shape = (x.shape[0], self.hidden_size)
        c_new = gates.new_empty(shape)
        tc = gates.new_empty(shape)
        h_new = gates.new_empty(shape)
        lstm_gates_forward(gate_views(gates), c, c_new, tc, h_new)
        self.save_for_backward(x, h, c, gates, tc, batched)
        if not batched:
            return h_new.squeeze(0), c_new.squeeze(0)
        return h_new, c_new

    def backward(
        self, grad_output: Sequence[Tensor | None] | None
    ) -> tuple[Tensor | None, tuple[Tensor | None, Tensor | None]]:
        x, h, c, acts, tc, batched = self.saved_tensors()
        grad_h, grad_c = (None, None) if grad_output is None else grad_output
        grad_h, grad_c = self.as_batch_grads(batched, x.shape[0], grad_h=grad_h, grad_c=grad_c)
        if grad_h is None:
            grad_h = torch.zeros_like(tc)
        grad_gates = torch.empty_like(acts)
        one = acts.new_ones(())
        grad_c_prev = lstm_step_backward(
            grad_h, grad_c, gate_views(acts), tc, c, gate_views(grad_gates), one
        )
        grad_x = self.accumulate_grads(grad_gates, grad_gates, x, h)
        grad_h_prev = grad_gates @ self.weight_hh.data if h is not None else None
        grad_c_out = grad_c_prev if c is not None else None
        grad_x, grad_h_prev, grad_c_out = self.unbatch(batched, grad_x, grad_h_prev, grad_c_out)
        return grad_x, (grad_h_prev, grad_c_out)
