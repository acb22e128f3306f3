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
from scidevnn_rnn.rnn_cell import NONLINEARITIES, activate_, activation_backward


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
        pre_steps, h_steps = pre.unbind(0), hs.unbind(0)
        w_hh_t = params.w_hh.data.t()
        first = True
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            target = h_steps[cur] if mask is None else torch.empty_like(h_steps[cur])
            if zero_start and first:
                target.copy_(pre_steps[t])
            else:
                torch.addmm(pre_steps[t], h_steps[prev], w_hh_t, out=target)
            activate_(target, self.nonlinearity)
            if mask is not None:
                torch.where(mask[t], target, h_steps[prev], out=h_steps[cur])
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
        outputs = slots.outputs(tape.hs)
        grad_pre = torch.empty_like(outputs)
        out_steps, grad_steps = outputs.unbind(0), grad_pre.unbind(0)
        grad_out_steps = None if grad_out is None else grad_out.unbind(0)
        w_hh = params.w_hh.data
        steps = outputs.shape[0]
        dh = grad_h if grad_h is not None else torch.zeros_like(out_steps[0])
        for k, t in enumerate(reversed(slots.order())):
            dh_t = dh if grad_out_steps is None else dh + grad_out_steps[t]
            dh_active = dh_t if mask is None else dh_t * mask[t]
            activation_backward(dh_active, out_steps[t], self.nonlinearity, grad_steps[t])
            if k == steps - 1 and not need_dh0:
                break
            dh_prev = grad_steps[t] @ w_hh
            dh = dh_prev if mask is None else torch.where(mask[t], dh_prev, dh_t)
        dx = input_weight_grads(params, grad_pre, tape.x, need_dx)
        hidden_weight_grads(params, grad_pre, slots.previous(tape.hs), None)
        if params.b_ih is not None:
            flat = grad_pre.reshape(-1, grad_pre.shape[2])
            accumulate_bias((params.b_ih, params.b_hh), flat.sum(0))
        if not need_dh0:
            return dx, None, None
        return dx, dh, None
