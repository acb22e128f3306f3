"""LSTM: LSTMCell's recurrence over whole sequences, stacked and optionally bidirectional."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scidevnn_rnn._common import accumulate_matmul
from scidevnn_rnn.lstm_cell import gate_views_per_step, lstm_gates_forward, lstm_step_backward
from scidevnn_rnn.rnn_base import (
    DirectionParams,
    DirectionTape,
    RNNBase,
    Slots,
    accumulate_grads,
    project_input,
)


@dataclass
class LSTMTape(DirectionTape):
    """One direction's forward, kept for its backward (all (T, N, ...) time-major)."""

    acts: Tensor  # gate activations i, f, g, o (T, N, 4H)
    cs: Tensor  # cell states (T + 1, N, H)
    tc: Tensor  # tanh(c') (T, N, H)
    m: Tensor | None  # o * tanh(c') before the projection (T, N, H), with proj_size


class LSTM(RNNBase[LSTMTape]):
    """Multi-layer LSTM over sequences, with torch's arguments, parameters and outputs.

    ``forward(input, hx=None, lengths=None)`` returns ``(output, (h_n, c_n))``; ``hx`` is
    ``(h_0, c_0)``. Each step is LSTMCell's (see scidevnn_rnn.lstm_cell); with ``proj_size``
    the hidden state is ``h = (o * tanh(c)) W_hr^T``. Shapes, ``lengths`` and the backward
    signature: see RNNBase. Speed: the input part of every gate for the whole sequence is one
    matrix product, each step one more for the hidden part; backward stacks the gate gradients
    of all steps so that dW_ih, dW_hh, the biases and the input gradient are one product each.
    """

    num_chunks = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
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
    ) -> tuple[Tensor, Tensor, Tensor | None, LSTMTape]:
        steps, batch, hidden = x.shape[0], x.shape[1], self.hidden_size
        acts = project_input(x, params, fold_hidden_bias=True)  # becomes the activations in place
        hs = slots.state_buffer(x, h0, self.output_size)
        cs = slots.state_buffer(x, c0, hidden)
        tc = x.new_empty(steps, batch, hidden)
        m = x.new_empty(steps, batch, hidden) if params.w_hr is not None else None
        out = slots.output_buffer(hs, mask)
        zero_start, first = h0 is None, slots.first()
        gates, h_steps, c_steps, tc_steps = (
            gate_views_per_step(acts),
            hs.unbind(0),
            cs.unbind(0),
            tc.unbind(0),
        )
        w_hh_t = params.w_hh.data.t()
        w_hr_t = None if params.w_hr is None else params.w_hr.data.t()
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            fresh = zero_start and t == first
            if not fresh:
                gates[t].all.addmm_(h_steps[prev], w_hh_t)
            c_prev = None if fresh else c_steps[prev]
            if mask is None:
                h_target = h_steps[cur] if m is None else m[t]
                lstm_gates_forward(gates[t], c_prev, c_steps[cur], tc_steps[t], h_target)
                if w_hr_t is not None:
                    torch.mm(h_target, w_hr_t, out=h_steps[cur])
            else:
                keep = mask[t]
                c_new = torch.empty_like(tc_steps[t])
                h_new = torch.empty_like(tc_steps[t]) if m is None else m[t]
                lstm_gates_forward(gates[t], c_prev, c_new, tc_steps[t], h_new)
                if w_hr_t is not None:
                    h_new = h_new @ w_hr_t
                torch.where(keep, c_new, c_steps[prev], out=c_steps[cur])
                torch.where(keep, h_new, h_steps[prev], out=h_steps[cur])
                torch.mul(h_new, keep, out=out[t])
        final = slots.final()
        tape = LSTMTape(x, hs, params, slots, mask, zero_start, acts=acts, cs=cs, tc=tc, m=m)
        return out, hs[final], cs[final], tape

    def backprop_direction(
        self,
        tape: LSTMTape,
        grad_out: Tensor | None,
        grad_h: Tensor | None,
        grad_c: Tensor | None,
        need_dx: bool,
        need_dh0: bool,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        slots, mask, acts, tc = tape.slots, tape.mask, tape.acts, tape.tc
        grad_gates = torch.empty_like(acts)
        gates, grads = gate_views_per_step(acts), gate_views_per_step(grad_gates)
        tc_steps, c_steps = tc.unbind(0), tape.cs.unbind(0)
        grad_out_steps = None if grad_out is None else grad_out.unbind(0)
        one = acts.new_ones(())
        proj = tape.params.w_hr
        grad_hs = None if proj is None else torch.empty_like(slots.outputs(tape.hs))
        w_hh, first = tape.params.w_hh.data, slots.first()
        dh = grad_h if grad_h is not None else tc.new_zeros(tc.shape[1], self.output_size)
        dc = grad_c
        if mask is not None and dc is None:
            dc = torch.zeros_like(tc_steps[0])
        for t in reversed(slots.order()):
            dh_t = dh if grad_out_steps is None else dh + grad_out_steps[t]
            dh_step, dc_step = dh_t, dc
            if mask is not None:  # padded rows: nothing enters the gates, states pass through
                dh_step = dh_t * mask[t]
                dc_step = None if dc is None else dc * mask[t]
            if proj is not None and grad_hs is not None:
                grad_hs[t].copy_(dh_step)
                dh_step = dh_step @ proj.data
            c_prev = None if (tape.zero_start and t == first) else c_steps[slots.prev(t)]
            dc_prev = lstm_step_backward(
                dh_step, dc_step, gates[t], tc_steps[t], c_prev, grads[t], one
            )
            if t == first and not need_dh0:
                break
            dh_prev = grads[t].all @ w_hh
            if mask is None:
                dh, dc = dh_prev, dc_prev
            else:
                assert dc is not None
                dh = torch.where(mask[t], dh_prev, dh_t)
                dc = torch.where(mask[t], dc_prev, dc)
        dx = accumulate_grads(tape, grad_gates, grad_gates, need_dx)
        if proj is not None and grad_hs is not None and tape.m is not None:
            flat_grad = grad_hs.reshape(-1, grad_hs.shape[2])
            accumulate_matmul(proj, flat_grad.t(), tape.m.reshape(-1, tape.m.shape[2]))
        if not need_dh0:
            return dx, None, None
        return dx, dh, dc
