"""RNN: RNNCell's recurrence over whole sequences, stacked and optionally bidirectional."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scidevnn_rnn._common import accumulate_bias
from scidevnn_rnn.rnn_base import (
    DirectionParams,
    RNNBase,
    Slots,
    hidden_weight_grads,
    input_weight_grads,
    project_input,
)
from scidevnn_rnn.rnn_cell import NONLINEARITIES, activate_, activation_derivative


@dataclass
class RNNTape:
    """One direction's forward, kept for its backward."""

    x: Tensor  # layer input (T, N, I)
    hs: Tensor  # hidden states (T + 1, N, H), see Slots
    params: DirectionParams
    slots: Slots
    mask: Tensor | None
    zero_start: bool


class RNN(RNNBase):
    """Multi-layer Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.

    Arguments, parameters and outputs as ``torch.nn.RNN``; ``forward(input, hx=None,
    lengths=None)`` returns ``(output, h_n)``. Shapes, ``lengths`` and the backward signature:
    see RNNBase. Backward: ``g_t = (dL/dh_t) * act'``, ``dL/dh_{t-1} += g_t W_hh``; the weight
    and input gradients are one matrix product each over the stacked ``g``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"RNN: unknown nonlinearity '{nonlinearity}'; select from 'tanh' or 'relu'"
            )
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device=device,
            dtype=dtype,
        )
        self.nonlinearity = nonlinearity

    def run_direction(
        self,
        x: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        params: DirectionParams,
        slots: Slots,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Any]:
        steps, batch = x.shape[0], x.shape[1]
        bias = None
        if params.b_ih is not None and params.b_hh is not None:
            bias = params.b_ih.data + params.b_hh.data
        pre = project_input(x, params.w_ih.data, bias)
        hs = x.new_empty(steps + 1, batch, self.hidden_size)
        start = slots.initial()
        zero_start = h0 is None
        if h0 is None:
            hs[start].zero_()
        else:
            hs[start].copy_(h0)
        out = slots.outputs(hs) if mask is None else x.new_empty(steps, batch, self.hidden_size)
        w_hh_t = params.w_hh.data.t()
        first = True
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            target = hs[cur] if mask is None else torch.empty_like(hs[cur])
            if zero_start and first:
                target.copy_(pre[t])
            else:
                torch.addmm(pre[t], hs[prev], w_hh_t, out=target)
            activate_(target, self.nonlinearity)
            if mask is not None:
                torch.where(mask[t], target, hs[prev], out=hs[cur])
                torch.mul(target, mask[t], out=out[t])
            first = False
        tape = RNNTape(x, hs, params, slots, mask, zero_start)
        return out, hs[slots.final()], None, tape

    def backprop_direction(
        self,
        tape: Any,
        grad_out: Tensor | None,
        grad_h: Tensor | None,
        grad_c: Tensor | None,
        need_dx: bool,
        need_dh0: bool,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        assert isinstance(tape, RNNTape)
        slots, params, mask = tape.slots, tape.params, tape.mask
        deriv = activation_derivative(slots.outputs(tape.hs), self.nonlinearity)
        if mask is not None:
            deriv.mul_(mask)  # padded steps pass no gradient into the gates
        grad_pre = torch.empty_like(deriv)
        w_hh = params.w_hh.data
        steps = deriv.shape[0]
        dh = grad_h
        for k, t in enumerate(reversed(slots.order())):
            if grad_out is None:
                dh_t = dh if dh is not None else torch.zeros_like(deriv[t])
            else:
                dh_t = grad_out[t] if dh is None else dh + grad_out[t]
            torch.mul(dh_t, deriv[t], out=grad_pre[t])
            if k == steps - 1 and not need_dh0:
                dh = None
                break
            dh_prev = grad_pre[t] @ w_hh
            dh = dh_prev if mask is None else torch.where(mask[t], dh_prev, dh_t)
        dx = input_weight_grads(params, grad_pre, tape.x, need_dx)
        hidden_weight_grads(params, grad_pre, slots.previous(tape.hs), None)
        if params.b_ih is not None:
            flat = grad_pre.reshape(-1, grad_pre.shape[2])
            accumulate_bias((params.b_ih, params.b_hh), flat.sum(0))
        return dx, dh, None
