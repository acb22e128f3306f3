"""RNN: RNNCell's recurrence over whole sequences, stacked and optionally bidirectional."""

from __future__ import annotations

import torch
from torch import Tensor

from scidevnn_rnn.rnn_base import (
    DirectionParams,
    DirectionTape,
    RNNBase,
    Slots,
    accumulate_grads,
    project_input,
)
from scidevnn_rnn.rnn_cell import activate_, activation_backward, check_nonlinearity


class RNN(RNNBase[DirectionTape]):
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
        check_nonlinearity("RNN", nonlinearity)
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
    ) -> tuple[Tensor, Tensor, Tensor | None, DirectionTape]:
        pre = project_input(x, params, fold_hidden_bias=True)
        hs = slots.state_buffer(x, h0, self.hidden_size)
        out = slots.output_buffer(hs, mask)
        zero_start, first = h0 is None, slots.first()
        pre_steps, h_steps = pre.unbind(0), hs.unbind(0)
        w_hh_t = params.w_hh.data.t()
        for t in slots.order():
            cur, prev = slots.cur(t), slots.prev(t)
            target = h_steps[cur] if mask is None else torch.empty_like(h_steps[cur])
            if zero_start and t == first:
                target.copy_(pre_steps[t])
            else:
                torch.addmm(pre_steps[t], h_steps[prev], w_hh_t, out=target)
            activate_(target, self.nonlinearity)
            if mask is not None:
                torch.where(mask[t], target, h_steps[prev], out=h_steps[cur])
                torch.mul(target, mask[t], out=out[t])
        tape = DirectionTape(x, hs, params, slots, mask, zero_start)
        return out, hs[slots.final()], None, tape

    def backprop_direction(
        self,
        tape: DirectionTape,
        grad_out: Tensor | None,
        grad_h: Tensor | None,
        grad_c: Tensor | None,
        need_dx: bool,
        need_dh0: bool,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        slots, mask = tape.slots, tape.mask
        outputs = slots.outputs(tape.hs)
        grad_pre = torch.empty_like(outputs)
        out_steps, grad_steps = outputs.unbind(0), grad_pre.unbind(0)
        grad_out_steps = None if grad_out is None else grad_out.unbind(0)
        w_hh, first = tape.params.w_hh.data, slots.first()
        dh = grad_h if grad_h is not None else torch.zeros_like(out_steps[0])
        for t in reversed(slots.order()):
            dh_t = dh if grad_out_steps is None else dh + grad_out_steps[t]
            dh_active = dh_t if mask is None else dh_t * mask[t]
            activation_backward(dh_active, out_steps[t], self.nonlinearity, grad_steps[t])
            if t == first and not need_dh0:
                break
            dh_prev = grad_steps[t] @ w_hh
            dh = dh_prev if mask is None else torch.where(mask[t], dh_prev, dh_t)
        dx = accumulate_grads(tape, grad_pre, grad_pre, need_dx)
        return dx, (dh if need_dh0 else None), None
