"""GRU: GRUCell's recurrence over whole sequences, stacked and optionally bidirectional."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scidevnn_rnn._common import accumulate_bias
from scidevnn_rnn.gru_cell import gru_backward_coefficients, gru_gates_forward, gru_step_backward
from scidevnn_rnn.rnn_base import (
    DirectionParams,
    RNNBase,
    Slots,
    hidden_weight_grads,
    input_weight_grads,
    project_input,
)


@dataclass
class GRUTape:
    """One direction's forward, kept for its backward."""

    x: Tensor  # layer input (T, N, I)
    acts: Tensor  # activations r, z, n (T, N, 3H)
    gh: Tensor  # hidden projections h W_hh^T + b_hh (T, N, 3H)
    hs: Tensor  # hidden states (T + 1, N, H), see Slots
    params: DirectionParams
    slots: Slots
    mask: Tensor | None


class GRU(RNNBase):
    """Multi-layer GRU over sequences, with torch's arguments, parameters and outputs.

    ``forward(input, hx=None, lengths=None)`` returns ``(output, h_n)``. Each step is
    GRUCell's (see scidevnn_rnn.gru_cell). Shapes, ``lengths`` and the backward signature: see
    RNNBase. The input projections of all steps are one matrix product; backward stacks the
    gate gradients so that the weight, bias and input gradients are one product each.
    """

    num_chunks = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "GRU",
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
        hidden = self.hidden_size
        b_ih = None if params.b_ih is None else params.b_ih.data
        b_hh = None if params.b_hh is None else params.b_hh.data
        acts = project_input(x, params.w_ih.data, b_ih)  # becomes the activations in place
        gh = torch.empty_like(acts)
        hs = x.new_empty(steps + 1, batch, hidden)
        start = slots.initial()
        zero_start = h0 is None
        if h0 is None:
            hs[start].zero_()
        else:
            hs[start].copy_(h0)
        out = slots.outputs(hs) if mask is None else x.new_empty(steps, batch, hidden)
        w_hh_t = params.w_hh.data.t()
        first = True
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            fresh = zero_start and first
            if fresh and b_hh is not None:
                gh[t].copy_(b_hh.expand_as(gh[t]))
            elif fresh:
                gh[t].zero_()
            elif b_hh is not None:
                torch.addmm(b_hh, hs[prev], w_hh_t, out=gh[t])
            else:
                torch.mm(hs[prev], w_hh_t, out=gh[t])
            h_prev = None if fresh else hs[prev]
            if mask is None:
                gru_gates_forward(acts[t], gh[t], h_prev, acts[t], hs[cur])
            else:
                h_new = torch.empty_like(hs[cur])
                gru_gates_forward(acts[t], gh[t], h_prev, acts[t], h_new)
                torch.where(mask[t], h_new, hs[prev], out=hs[cur])
                torch.mul(h_new, mask[t], out=out[t])
            first = False
        tape = GRUTape(x, acts, gh, hs, params, slots, mask)
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
        assert isinstance(tape, GRUTape)
        slots, params, mask = tape.slots, tape.params, tape.mask
        hidden = self.hidden_size
        acts = tape.acts
        previous = slots.previous(tape.hs)
        q, p, r_factor = gru_backward_coefficients(acts, tape.gh[..., 2 * hidden :], previous)
        grad_gi = torch.empty_like(acts)
        grad_gh = torch.empty_like(acts)
        w_hh = params.w_hh.data
        steps = acts.shape[0]
        dh = grad_h
        for k, t in enumerate(reversed(slots.order())):
            if grad_out is None:
                dh_t = dh if dh is not None else torch.zeros_like(q[t])
            else:
                dh_t = grad_out[t] if dh is None else dh + grad_out[t]
            dh_active = dh_t if mask is None else dh_t * mask[t]
            direct = gru_step_backward(
                dh_active, acts[t], q[t], p[t], r_factor[t], grad_gi[t], grad_gh[t]
            )
            if k == steps - 1 and not need_dh0:
                dh = None
                break
            dh_prev = torch.addmm(direct, grad_gh[t], w_hh)
            dh = dh_prev if mask is None else torch.where(mask[t], dh_prev, dh_t)
        dx = input_weight_grads(params, grad_gi, tape.x, need_dx)
        hidden_weight_grads(params, grad_gh, previous, params.b_hh)
        if params.b_ih is not None:
            accumulate_bias((params.b_ih,), grad_gi.reshape(-1, grad_gi.shape[2]).sum(0))
        return dx, dh, None
