"""RNNBase: what RNN, LSTM and GRU share: parameters, layers, directions, lengths, dropout.

A subclass supplies the recurrence of one direction of one layer over a whole sequence
(``run_direction``) and its backpropagation through time (``backprop_direction``), keeping
what the backward needs in a ``DirectionTape``; this class stacks layers and directions,
handles ``batch_first``, unbatched input, initial states, variable lengths and dropout between
layers, exactly as ``torch.nn.RNNBase`` lays them out, and provides the state buffers
(``Slots``), the input projection and the weight gradients all three layers use.

Time runs along dim 0 inside (``(T, N, features)``, contiguous). The hidden states of one
direction live in one buffer ``Hs`` of ``T + 1`` slots: the forward direction reads slot ``t``
and writes slot ``t + 1``, the reverse direction reads ``t + 1`` and writes ``t``, so the
outputs are ``Hs[1:]`` or ``Hs[:T]`` and the states each step started from ``Hs[:T]`` or
``Hs[1:]``, both contiguous: the weight gradients are then one matrix product over the whole
sequence instead of one per step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from scidevnn.module import Module, is_grad_enabled
from scidevnn.parameter import Parameter
from scidevnn_rnn._common import accumulate_bias, accumulate_matmul, check_grad_shape


@dataclass(frozen=True)
class DirectionParams:
    """The parameters of one direction of one layer (``None`` where absent)."""

    w_ih: Parameter
    w_hh: Parameter
    b_ih: Parameter | None
    b_hh: Parameter | None
    w_hr: Parameter | None


@dataclass(frozen=True)
class Slots:
    """Where one direction reads and writes its states in a ``(T + 1, ...)`` buffer."""

    steps: int
    reverse: bool

    def order(self) -> range:
        """Time steps in the order the forward pass visits them."""
        return range(self.steps - 1, -1, -1) if self.reverse else range(self.steps)

    def first(self) -> int:
        """The time step the forward pass visits first (and the backward pass last)."""
        return self.steps - 1 if self.reverse else 0

    def initial(self) -> int:
        return self.steps if self.reverse else 0

    def final(self) -> int:
        return 0 if self.reverse else self.steps

    def cur(self, t: int) -> int:
        return t if self.reverse else t + 1

    def prev(self, t: int) -> int:
        return t + 1 if self.reverse else t

    def outputs(self, buffer: Tensor) -> Tensor:
        """The states written at steps 0..T-1, in time order."""
        return buffer[: self.steps] if self.reverse else buffer[1:]

    def previous(self, buffer: Tensor) -> Tensor:
        """The states steps 0..T-1 started from, in time order."""
        return buffer[1:] if self.reverse else buffer[: self.steps]

    def state_buffer(self, x: Tensor, initial: Tensor | None, size: int) -> Tensor:
        """A (T + 1, N, size) buffer like ``x`` holding ``initial`` (zeros when None) in its
        initial slot."""
        buffer = x.new_empty(self.steps + 1, x.shape[1], size)
        if initial is None:
            buffer[self.initial()].zero_()
        else:
            buffer[self.initial()].copy_(initial)
        return buffer

    def output_buffer(self, states: Tensor, mask: Tensor | None) -> Tensor:
        """Where the outputs (T, N, size) go: the state buffer's own slots, or, with padding
        (whose outputs are zero while its state carries on), a tensor of their own."""
        if mask is None:
            return self.outputs(states)
        return states.new_empty(self.steps, states.shape[1], states.shape[2])


@dataclass
class DirectionTape:
    """What one direction's forward keeps for its backward; a layer's tape adds its tensors."""

    x: Tensor  # layer input (T, N, I)
    hs: Tensor  # hidden states (T + 1, N, H_out), see Slots
    params: DirectionParams
    slots: Slots
    mask: Tensor | None  # (T, N, 1) bool, False at padding; None without padding
    zero_start: bool  # no initial state given: the first step started from zeros


def project_input(x: Tensor, params: DirectionParams, fold_hidden_bias: bool) -> Tensor:
    """``x W_ih^T + b_ih`` (``+ b_hh`` too when ``fold_hidden_bias``) for a whole sequence in
    one matrix product: (T, N, I) -> (T, N, G)."""
    steps, batch = x.shape[0], x.shape[1]
    flat = x.reshape(steps * batch, x.shape[2])
    weight = params.w_ih.data
    if params.b_ih is None or params.b_hh is None:
        out = flat @ weight.t()
    else:
        bias = params.b_ih.data + params.b_hh.data if fold_hidden_bias else params.b_ih.data
        out = torch.addmm(bias, flat, weight.t())
    return out.view(steps, batch, weight.shape[0])


def accumulate_grads(
    tape: DirectionTape, grad_gates_x: Tensor, grad_gates_h: Tensor, need_dx: bool
) -> Tensor | None:
    """Add a whole direction's weight and bias gradients, given the stacked d loss / d
    pre-activations (T, N, G) of all steps; return dx (T, N, I), or None unless ``need_dx``.

    ``grad_gates_x`` multiplies the input (``w_ih``, ``b_ih``), ``grad_gates_h`` the previous
    hidden state (``w_hh``, ``b_hh``); they are one tensor except in the GRU. One matrix product
    each: dW_ih += g_x^T x, dW_hh += g_h^T h_prev, dx = g_x W_ih.
    """
    params, x, previous = tape.params, tape.x, tape.slots.previous(tape.hs)
    steps, batch = x.shape[0], x.shape[1]
    flat_x = grad_gates_x.reshape(steps * batch, grad_gates_x.shape[2])
    flat_h = flat_x if grad_gates_h is grad_gates_x else grad_gates_h.reshape(flat_x.shape)
    accumulate_matmul(params.w_ih, flat_x.t(), x.reshape(steps * batch, x.shape[2]))
    accumulate_matmul(params.w_hh, flat_h.t(), previous.reshape(-1, previous.shape[2]))
    if params.b_ih is not None:
        if flat_h is flat_x:
            accumulate_bias((params.b_ih, params.b_hh), flat_x.sum(0))
        else:
            accumulate_bias((params.b_ih,), flat_x.sum(0))
            accumulate_bias((params.b_hh,), flat_h.sum(0))
    if not need_dx:
        return None
    return (flat_x @ params.w_ih.data).view(steps, batch, x.shape[2])


TapeT = TypeVar("TapeT", bound=DirectionTape)


@dataclass
class _Context(Generic[TapeT]):
    """What one forward call leaves for its backward."""

    batched: bool
    batch: int
    steps: int
    active_steps: int
    hx_given: bool
    mask: Tensor | None
    tapes: list[list[TapeT]]
    dropout_masks: list[Tensor | None]


class RNNBase(Module, Generic[TapeT]):
    """Multi-layer, optionally bidirectional recurrence over a sequence (see module docstring).

    Shapes (``L`` = sequence length, ``N`` = batch, ``D`` = 2 if bidirectional else 1,
    ``H_out`` = ``proj_size`` or ``hidden_size``):
    input (L, N, input_size), or (N, L, input_size) with ``batch_first``, or unbatched
    (L, input_size); output (L, N, D*H_out) (batch-first or unbatched alike); h_n
    (num_layers*D, N, H_out) ((num_layers*D, H_out) unbatched); LSTM's c_n likewise with
    ``hidden_size``. Parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (LSTM with projections: ``weight_hr_l{k}``), ``_reverse`` for the second
    direction, registered and initialised (U(-1/sqrt(hidden), 1/sqrt(hidden))) in torch's order.

    ``forward(input, hx=None, lengths=None)``: ``lengths`` (N,) gives each sequence's true
    length (1 <= length <= L, any order); steps past it are padding: they take no part in the
    recurrence, their outputs are zero and their input gradients zero (what
    ``pack_padded_sequence`` then ``pad_packed_sequence(total_length=L)`` give in torch); the
    reverse direction starts at each sequence's own last step, and h_n holds each sequence's
    state at its own last step.

    ``backward(grad)``: ``grad`` is d loss / d output, or the pair ``(grad_output, grad_h_n)``
    (LSTM: ``(grad_output, (grad_h_n, grad_c_n))``) with ``None`` for any part that is zero.
    Returns d loss / d input, or ``(grad_input, grad_hx)`` when ``hx`` was given to forward
    (LSTM: ``(grad_input, (grad_h_0, grad_c_0))``). ``grad_input`` is None when
    ``needs_input_grad`` is off.
    """

    num_chunks: int = 1

    def __init__(
        self,
        mode: str,
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
        super().__init__()
        name = type(self).__name__
        if isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise ValueError(
                f"{name}: input_size, hidden_size and num_layers must be positive, got "
                f"{input_size}, {hidden_size}, {num_layers}"
            )
        if proj_size < 0 or (proj_size and proj_size >= hidden_size):
            raise ValueError(f"{name}: proj_size must be 0 or in [1, hidden_size), got {proj_size}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout acts between recurrent layers, so dropout={dropout} has no "
                "effect with num_layers=1",
                stacklevel=2,
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        gates = self.num_chunks * hidden_size
        out_size = proj_size or hidden_size
        self._direction_names: list[tuple[str, ...]] = []
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                layer_input = input_size if layer == 0 else out_size * self.num_directions
                shapes: list[tuple[str, tuple[int, ...]]] = [
                    ("weight_ih", (gates, layer_input)),
                    ("weight_hh", (gates, out_size)),
                ]
                if bias:
                    shapes += [("bias_ih", (gates,)), ("bias_hh", (gates,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for base, shape in shapes:
                    setattr(self, base + suffix, Parameter(torch.empty(shape, **factory)))
                self._direction_names.append(tuple(base + suffix for base, _ in shapes))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of one direction's output: ``proj_size`` or ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def reset_parameters(self) -> None:
        """U(-1/sqrt(hidden), 1/sqrt(hidden)) for every parameter, in torch's order."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            param.data.uniform_(-bound, bound)

    def direction_params(self, layer: int, direction: int) -> DirectionParams:
        names = self._direction_names[layer * self.num_directions + direction]
        found = {name.split("_l")[0]: getattr(self, name) for name in names}
        return DirectionParams(
            found["weight_ih"],
            found["weight_hh"],
            found.get("bias_ih"),
            found.get("bias_hh"),
            found.get("weight_hr"),
        )

    # ------------------------------------------------------------------ to be supplied
    def run_direction(
        self,
        x: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        params: DirectionParams,
        slots: Slots,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, TapeT]:
        """One direction over (T, N, I): returns output (T, N, H_out), h_T, c_T, tape."""
        raise NotImplementedError

    def backprop_direction(
        self,
        tape: TapeT,
        grad_out: Tensor | None,
        grad_h: Tensor | None,
        grad_c: Tensor | None,
        need_dx: bool,
        need_dh0: bool,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Backpropagation through time of one direction: returns dx, dh_0, dc_0."""
        raise NotImplementedError

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input: Tensor,
        hx: Tensor | Sequence[Tensor] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor, Any]:
        name = type(self).__name__
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "(N, L, {0})" if self.batch_first else "(L, N, {0})"
            raise ValueError(
                f"{name}: expected input of shape {layout.format(self.input_size)} or "
                f"(L, {self.input_size}), got {tuple(input.shape)}"
            )
        batched = input.dim() == 3
        if not batched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(f"{name}: expected a sequence length > 0, got {tuple(input.shape)}")
        h0, c0 = self._initial_states(hx, batch, batched)
        mask = self._step_mask(lengths, steps, batch, batched, x.device)
        active = steps if mask is None else mask.shape[0]
        layer_input = x[:active].contiguous()
        if mask is not None:  # padding values, whatever they are, must not reach any number
            layer_input = torch.where(mask, layer_input, 0.0)

        tapes: list[list[TapeT]] = []
        dropout_masks: list[Tensor | None] = []
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        for layer in range(self.num_layers):
            outputs: list[Tensor] = []
            layer_tapes: list[TapeT] = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                out, h_last, c_last, tape = self.run_direction(
                    layer_input,
                    None if h0 is None else h0[index],
                    None if c0 is None else c0[index],
                    self.direction_params(layer, direction),
                    Slots(active, reverse=direction == 1),
                    mask,
                )
                outputs.append(out)
                layer_tapes.append(tape)
                h_n.append(h_last)
                if c_last is not None:
                    c_n.append(c_last)
            layer_output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            keep: Tensor | None = None
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                keep = torch.empty_like(layer_output)
                if self.dropout < 1:
                    keep.bernoulli_(1 - self.dropout).div_(1 - self.dropout)
                else:
                    keep.zero_()
                layer_output = layer_output * keep
            tapes.append(layer_tapes)
            dropout_masks.append(keep)
            layer_input = layer_output

        output = layer_input
        if active < steps:
            padding = output.new_zeros(steps - active, batch, output.shape[2])
            output = torch.cat([output, padding])
        if batched and self.batch_first:
            output = output.transpose(0, 1)
        h_stack = torch.stack(h_n)
        c_stack = torch.stack(c_n) if c_n else None
        if not batched:
            output = output.squeeze(1)
            h_stack = h_stack.squeeze(1)
            c_stack = None if c_stack is None else c_stack.squeeze(1)
        if is_grad_enabled():
            self.save_for_backward(
                _Context(batched, batch, steps, active, hx is not None, mask, tapes, dropout_masks)
            )
        return output, (h_stack if c_stack is None else (h_stack, c_stack))

    def _state_shape(self, batch: int, batched: bool, size: int) -> tuple[int, ...]:
        layers = self.num_layers * self.num_directions
        return (layers, batch, size) if batched else (layers, size)

    def _initial_states(
        self, hx: Tensor | Sequence[Tensor] | None, batch: int, batched: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        """Check ``hx`` and return (h0, c0) as (layers*D, N, size), or (None, None)."""
        if hx is None:
            return None, None
        name = type(self).__name__
        expected = [(self._state_shape(batch, batched, self.output_size), "h_0")]
        if self.mode == "LSTM":
            if isinstance(hx, Tensor) or len(hx) != 2:
                raise ValueError(f"{name}: hx must be a pair (h_0, c_0)")
            states = list(hx)
            expected.append((self._state_shape(batch, batched, self.hidden_size), "c_0"))
        else:
            if not isinstance(hx, Tensor):
                raise ValueError(f"{name}: hx must be a tensor, got {type(hx).__name__}")
            states = [hx]
        for state, (shape, label) in zip(states, expected, strict=True):
            if tuple(state.shape) != shape:
                raise ValueError(
                    f"{name}: {label} has shape {tuple(state.shape)}, expected {shape}"
                )
        if not batched:
            states = [state.unsqueeze(1) for state in states]
        return states[0], (states[1] if len(states) > 1 else None)

    def _step_mask(
        self,
        lengths: Tensor | Sequence[int] | None,
        steps: int,
        batch: int,
        batched: bool,
        device: torch.device,
    ) -> Tensor | None:
        """(T_active, N, 1) bool: True where step t < length; None when nothing is padding."""
        if lengths is None:
            return None
        name = type(self).__name__
        if not batched:
            raise ValueError(f"{name}: lengths needs batched input (L, N, features)")
        lengths_t = torch.as_tensor(lengths, device="cpu")
        if lengths_t.dim() != 1 or lengths_t.shape[0] != batch:
            raise ValueError(
                f"{name}: lengths must have shape ({batch},), got {tuple(lengths_t.shape)}"
            )
        if lengths_t.is_floating_point() or lengths_t.is_complex():
            raise ValueError(f"{name}: lengths must be integers, got {lengths_t.dtype}")
        low, high = int(lengths_t.min()), int(lengths_t.max())
        if low < 1 or high > steps:
            raise ValueError(
                f"{name}: lengths must lie in [1, {steps}] (the input's length), got {low}..{high}"
            )
        if low == steps:
            return None
        time = torch.arange(high).unsqueeze(1)
        return (time < lengths_t.unsqueeze(0)).unsqueeze(2).to(device)

    # ------------------------------------------------------------------ backward
    def backward(self, grad: Any) -> Any:
        ctx: _Context[TapeT]
        (ctx,) = self.saved_tensors()
        grad_out, grad_h, grad_c = self._split_grad(grad, ctx)
        width = self.output_size
        directions = self.num_directions
        h0_grads: list[Tensor] = []
        c0_grads: list[Tensor] = []
        for layer in reversed(range(self.num_layers)):
            keep = ctx.dropout_masks[layer]
            if keep is not None and grad_out is not None:
                grad_out = grad_out * keep
            need_dx = layer > 0 or self.needs_input_grad
            grad_in: Tensor | None = None
            for direction in reversed(range(directions)):
                index = layer * directions + direction
                part = None
                if grad_out is not None:
                    part = grad_out[:, :, direction * width : (direction + 1) * width]
                dx, dh0, dc0 = self.backprop_direction(
                    ctx.tapes[layer][direction],
                    part,
                    None if grad_h is None else grad_h[index],
                    None if grad_c is None else grad_c[index],
                    need_dx,
                    ctx.hx_given,
                )
                if dx is not None:
                    grad_in = dx if grad_in is None else grad_in.add_(dx)
                if dh0 is not None:
                    h0_grads.append(dh0)
                if dc0 is not None:
                    c0_grads.append(dc0)
            grad_out = grad_in
        grad_input = None if grad_out is None else self._to_input_layout(grad_out, ctx)
        if not ctx.hx_given:
            return grad_input
        # collected from the last layer and direction down: reverse into torch's order
        grad_h0 = torch.stack(h0_grads[::-1])
        grad_c0 = torch.stack(c0_grads[::-1]) if c0_grads else None
        if not ctx.batched:
            grad_h0 = grad_h0.squeeze(1)
            grad_c0 = None if grad_c0 is None else grad_c0.squeeze(1)
        return grad_input, (grad_h0 if grad_c0 is None else (grad_h0, grad_c0))

    def _split_grad(
        self, grad: Any, ctx: _Context[TapeT]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """(grad_output, grad_h_n, grad_c_n), time-major and batched, masked at padding."""
        name = type(self).__name__
        grad_state: Any = None
        if isinstance(grad, (tuple, list)):
            if len(grad) != 2:
                raise ValueError(f"{name}.backward: expected (grad_output, grad_states)")
            grad_out, grad_state = grad
        else:
            grad_out = grad
        grad_h: Tensor | None = None
        grad_c: Tensor | None = None
        if self.mode == "LSTM" and grad_state is not None:
            grad_h, grad_c = grad_state
        else:
            grad_h = grad_state
        features = self.output_size * self.num_directions
        if not ctx.batched:
            out_shape: tuple[int, ...] = (ctx.steps, features)
        elif self.batch_first:
            out_shape = (ctx.batch, ctx.steps, features)
        else:
            out_shape = (ctx.steps, ctx.batch, features)
        check_grad_shape(name, "grad_output", grad_out, out_shape)
        h_shape = self._state_shape(ctx.batch, ctx.batched, self.output_size)
        check_grad_shape(name, "grad_h_n", grad_h, h_shape)
        c_shape = self._state_shape(ctx.batch, ctx.batched, self.hidden_size)
        check_grad_shape(name, "grad_c_n", grad_c, c_shape)
        if not ctx.batched:
            grad_out = None if grad_out is None else grad_out.unsqueeze(1)
            grad_h = None if grad_h is None else grad_h.unsqueeze(1)
            grad_c = None if grad_c is None else grad_c.unsqueeze(1)
        elif grad_out is not None and self.batch_first:
            grad_out = grad_out.transpose(0, 1)
        if grad_out is not None:
            grad_out = grad_out[: ctx.active_steps]
            if ctx.mask is not None:
                grad_out = grad_out * ctx.mask
        return grad_out, grad_h, grad_c

    def _to_input_layout(self, grad: Tensor, ctx: _Context[TapeT]) -> Tensor:
        if ctx.active_steps < ctx.steps:
            padding = grad.new_zeros(ctx.steps - ctx.active_steps, *grad.shape[1:])
            grad = torch.cat([grad, padding])
        if not ctx.batched:
            return grad.squeeze(1)
        return grad.transpose(0, 1) if self.batch_first else grad

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text
