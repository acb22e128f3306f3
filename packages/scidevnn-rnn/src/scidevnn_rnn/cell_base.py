"""RNNCellBase: what RNNCell, LSTMCell and GRUCell share: parameters, argument checks, the
batch dimension of unbatched calls, weight gradients and the views of a gate tensor."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from scidevnn.module import Module
from scidevnn.parameter import Parameter
from scidevnn_rnn._common import accumulate_bias, accumulate_matmul, check_grad_shape


def gate_chunks(buffer: Tensor, chunks: int) -> tuple[Tensor, ...]:
    """Views of a (..., chunks*H) gate tensor: the whole, the first two gates together, each."""
    parts = buffer.chunk(chunks, dim=-1)
    return (buffer, buffer[..., : 2 * parts[0].shape[-1]], *parts)


def gate_chunks_per_step(buffer: Tensor, chunks: int) -> list[tuple[Tensor, ...]]:
    """``gate_chunks`` of each step of a (T, N, chunks*H) tensor.

    Built once per buffer so that the per-step loops slice nothing: on these sizes an indexing
    call costs as much as the arithmetic.
    """
    hidden = buffer.shape[-1] // chunks
    parts = (
        buffer.unbind(0),
        buffer[..., : 2 * hidden].unbind(0),
        *(part.unbind(0) for part in buffer.chunk(chunks, dim=-1)),
    )
    return list(zip(*parts, strict=True))


class RNNCellBase(Module):
    """One recurrent step with ``num_chunks`` gates of ``hidden_size`` each.

    Parameters, named and shaped as torch's: ``weight_ih`` (chunks*hidden, input),
    ``weight_hh`` (chunks*hidden, hidden), ``bias_ih`` and ``bias_hh`` (chunks*hidden,), or
    ``None`` when ``bias=False``. All drawn from U(-1/sqrt(hidden), 1/sqrt(hidden)) in that
    order, so the same seed gives torch's weights.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_chunks: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        gates = num_chunks * hidden_size
        self.weight_ih = Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = Parameter(torch.empty(gates, hidden_size, **factory))
        self.bias_ih: Parameter | None
        self.bias_hh: Parameter | None
        if bias:
            self.bias_ih = Parameter(torch.empty(gates, **factory))
            self.bias_hh = Parameter(torch.empty(gates, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(hidden), 1/sqrt(hidden)) for every parameter, in registration order."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for param in self.parameters():
            param.data.uniform_(-bound, bound)

    def check_input(self, x: Tensor) -> bool:
        """Validate ``x`` ((N, input_size) or unbatched (input_size,)); True when batched."""
        name = type(self).__name__
        if x.dim() not in (1, 2):
            raise ValueError(
                f"{name}: expected input of shape (N, {self.input_size}) or "
                f"({self.input_size},), got {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input has {x.shape[-1]} features, expected {self.input_size} "
                f"(input shape {tuple(x.shape)})"
            )
        return x.dim() == 2

    def check_state(self, state: Tensor, x: Tensor, what: str) -> None:
        """A state must be (N, hidden_size) for batched ``x`` and (hidden_size,) otherwise."""
        expected = (*x.shape[:-1], self.hidden_size)
        if tuple(state.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: {what} has shape {tuple(state.shape)}, expected "
                f"{expected} for input of shape {tuple(x.shape)}"
            )

    def as_batch(
        self, x: Tensor, **states: Tensor | None
    ) -> tuple[bool, Tensor, list[Tensor | None]]:
        """Check ``x`` and the states given by name; return ``(batched, x, states)`` with a batch
        dimension of 1 added when ``x`` is unbatched (``None`` states stay ``None``)."""
        batched = self.check_input(x)
        for what, state in states.items():
            if state is not None:
                self.check_state(state, x, what)
        if batched:
            return True, x, list(states.values())
        rows = [None if state is None else state.unsqueeze(0) for state in states.values()]
        return False, x.unsqueeze(0), rows

    def as_batch_grads(
        self, batched: bool, rows: int, **grads: Tensor | None
    ) -> list[Tensor | None]:
        """Check that each gradient, given by name, has its output's shape ((rows, hidden), or
        (hidden,) for an unbatched call); return them with the batch dimension of ``as_batch``."""
        shape = (rows, self.hidden_size) if batched else (self.hidden_size,)
        for what, grad in grads.items():
            check_grad_shape(type(self).__name__, what, grad, shape)
        if batched:
            return list(grads.values())
        return [None if grad is None else grad.unsqueeze(0) for grad in grads.values()]

    @staticmethod
    def unbatch(batched: bool, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
        """Drop the batch dimension ``as_batch`` added to an unbatched call."""
        if batched:
            return tensors
        return tuple(None if tensor is None else tensor.squeeze(0) for tensor in tensors)

    def input_projection(self, x: Tensor, fold_hidden_bias: bool) -> Tensor:
        """``x W_ih^T + b_ih`` (``+ b_hh`` too when ``fold_hidden_bias``): (N, chunks*hidden)."""
        w = self.weight_ih.data.t()
        if self.bias_ih is None or self.bias_hh is None:
            return x @ w
        bias = self.bias_ih.data + self.bias_hh.data if fold_hidden_bias else self.bias_ih.data
        return torch.addmm(bias, x, w)

    def accumulate_grads(
        self, grad_gates_x: Tensor, grad_gates_h: Tensor, x: Tensor, h: Tensor | None
    ) -> Tensor | None:
        """Add one step's weight and bias gradients, given d loss / d pre-activations; return
        ``grad_x = grad_gates_x W_ih`` (None when ``needs_input_grad`` is off).

        ``grad_gates_x`` multiplies the input (``weight_ih``, ``bias_ih``), ``grad_gates_h`` the
        hidden state (``weight_hh``, ``bias_hh``); they are one tensor except in the GRU.
        """
        accumulate_matmul(self.weight_ih, grad_gates_x.t(), x)
        if h is not None:
            accumulate_matmul(self.weight_hh, grad_gates_h.t(), h)
        elif self.weight_hh.grad is None:
            self.weight_hh.accumulate(torch.zeros_like(self.weight_hh.data))
        if self.bias_ih is not None:
            if grad_gates_x is grad_gates_h:
                accumulate_bias((self.bias_ih, self.bias_hh), grad_gates_x.sum(0))
            else:
                accumulate_bias((self.bias_ih,), grad_gates_x.sum(0))
                accumulate_bias((self.bias_hh,), grad_gates_h.sum(0))
        return grad_gates_x @ self.weight_ih.data if self.needs_input_grad else None

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        return text
