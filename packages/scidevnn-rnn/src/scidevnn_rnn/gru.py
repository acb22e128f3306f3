"""GRU: GRUCell's recurrence over whole sequences, stacked and optionally bidirectional."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scidevnn_rnn._common import accumulate_bias
from scidevnn_rnn.gru_cell import gru_gate_views_per_step, gru_gates_forward, gru_step_backward
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
    zero_start: bool


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
        gates, gh_gates = gru_gate_views_per_step(acts), gru_gate_views_per_step(gh)
        h_steps = hs.unbind(0)
        w_hh_t = params.w_hh.data.t()
        first = True
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            fresh = zero_start and first
            gh_t = gh_gates[t].all
            if fresh and b_hh is not None:
                gh_t.copy_(b_hh.expand_as(gh_t))
            elif fresh:
                gh_t.zero_()
            elif b_hh is not None:
                torch.addmm(b_hh, h_steps[prev], w_hh_t, out=gh_t)
            else:
                torch.mm(h_steps[prev], w_hh_t, out=gh_t)
            h_prev = None if fresh else h_steps[prev]
            if mask is None:
                gru_gates_forward(gates[t], gh_gates[t], h_prev, gates[t], h_steps[cur])
            else:
                h_new = torch.empty_like(h_steps[cur])
                gru_gates_forward(gates[t], gh_gates[t], h_prev, gates[t], h_new)
                torch.where(mask[t], h_new, h_steps[prev], out=h_steps[cur])
                torch.mul(h_new, mask[t], out=out[t])
            first = False
        tape = GRUTape(x, acts, gh, hs, params, slots, mask, zero_start)
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
        acts = tape.acts
        steps = acts.shape[0]
        grad_gi = torch.empty_like(acts)
        grad_gh = torch.empty_like(acts)
        gates = gru_gate_views_per_step(acts)
        gh_n = gru_gate_views_per_step(tape.gh)
        gi_steps, gh_steps = gru_gate_views_per_step(grad_gi), gru_gate_views_per_step(grad_gh)
        h_steps = tape.hs.unbind(0)
        grad_out_steps = None if grad_out is None else grad_out.unbind(0)
        w_hh = params.w_hh.data
        dh = grad_h if grad_h is not None else acts.new_zeros(acts.shape[1], self.hidden_size)
        for k, t in enumerate(reversed(slots.order())):
            first_step = k == steps - 1  # the first step of the forward pass
            dh_t = dh if grad_out_steps is None else dh + grad_out_steps[t]
            dh_active = dh_t if mask is None else dh_t * mask[t]
            h_prev = None if (tape.zero_start and first_step) else h_steps[slots.prev(t)]
            direct = gru_step_backward(
                dh_active, gates[t], gh_n[t].n, h_prev, gi_steps[t], gh_steps[t]
            )
            if first_step and not need_dh0:
                break
            dh_prev = torch.addmm(direct, gh_steps[t].all, w_hh)
            dh = dh_prev if mask is None else torch.where(mask[t], dh_prev, dh_t)
        dx = input_weight_grads(params, grad_gi, tape.x, need_dx)
        hidden_weight_grads(params, grad_gh, slots.previous(tape.hs), params.b_hh)
        if params.b_ih is not None:
            accumulate_bias((params.b_ih,), grad_gi.reshape(-1, grad_gi.shape[2]).sum(0))
        if not need_dh0:
            return dx, None, None
        return dx, dh, None
