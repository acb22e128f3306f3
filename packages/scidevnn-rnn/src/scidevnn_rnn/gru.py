"""GRU: GRUCell's recurrence over whole sequences, stacked and optionally bidirectional."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scidevnn_rnn.gru_cell import gru_gate_views_per_step, gru_gates_forward, gru_step_backward
from scidevnn_rnn.rnn_base import (
    DirectionParams,
    DirectionTape,
    RNNBase,
    Slots,
    accumulate_grads,
    project_input,
)


@dataclass
class GRUTape(DirectionTape):
    """One direction's forward, kept for its backward."""

    acts: Tensor  # activations r, z, n (T, N, 3H)
    gh: Tensor  # hidden projections h W_hh^T + b_hh (T, N, 3H)


class GRU(RNNBase[GRUTape]):
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
    ) -> tuple[Tensor, Tensor, Tensor | None, GRUTape]:
        b_hh = None if params.b_hh is None else params.b_hh.data
        acts = project_input(x, params, fold_hidden_bias=False)  # becomes the activations in place
        gh = torch.empty_like(acts)
        hs = slots.state_buffer(x, h0, self.hidden_size)
        out = slots.output_buffer(hs, mask)
        zero_start, first = h0 is None, slots.first()
        gates, gh_gates = gru_gate_views_per_step(acts), gru_gate_views_per_step(gh)
        h_steps = hs.unbind(0)
        w_hh_t = params.w_hh.data.t()
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            fresh = zero_start and t == first
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
        tape = GRUTape(x, hs, params, slots, mask, zero_start, acts=acts, gh=gh)
        return out, hs[slots.final()], None, tape

    def backprop_direction(
        self,
        tape: GRUTape,
        grad_out: Tensor | None,
        grad_h: Tensor | None,
        grad_c: Tensor | None,
        need_dx: bool,
        need_dh0: bool,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        slots, mask, acts = tape.slots, tape.mask, tape.acts
        grad_gi = torch.empty_like(acts)
        grad_gh = torch.empty_like(acts)
        gates = gru_gate_views_per_step(acts)
        gh_n = gru_gate_views_per_step(tape.gh)
        gi_steps, gh_steps = gru_gate_views_per_step(grad_gi), gru_gate_views_per_step(grad_gh)
        h_steps = tape.hs.unbind(0)
        grad_out_steps = None if grad_out is None else grad_out.unbind(0)
        w_hh, first = tape.params.w_hh.data, slots.first()
        dh = grad_h if grad_h is not None else acts.new_zeros(acts.shape[1], self.hidden_size)
        for t in reversed(slots.order()):
            dh_t = dh if grad_out_steps is None else dh + grad_out_steps[t]
            dh_active = dh_t if mask is None else dh_t * mask[t]
            h_prev = None if (tape.zero_start and t == first) else h_steps[slots.prev(t)]
            direct = gru_step_backward(
                dh_active, gates[t], gh_n[t].n, h_prev, gi_steps[t], gh_steps[t]
            )
            if t == first and not need_dh0:
                break
            dh_prev = torch.addmm(direct, gh_steps[t].all, w_hh)
            dh = dh_prev if mask is None else torch.where(mask[t], dh_prev, dh_t)
        dx = accumulate_grads(tape, grad_gi, grad_gh, need_dx)
        return dx, (dh if need_dh0 else None), None
