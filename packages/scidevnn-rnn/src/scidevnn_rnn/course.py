"""The course interface of this plugin: ``SciDevNN.SDmodules.RNNCell``, ``LSTMCell``, ``Tanh``.

Thin wrappers (``SciDevNN.SDbase``) over the plugin's layers, with the course's conventions:
``cell(x, hx)`` runs one step; ``cell.backward(x, hx, grad)`` (or ``backward(x, grad)`` when
the step started from zero states) returns the input gradients of that step and adds the
parameter gradients into the running totals, so calling it for every step of a sequence, in
any order, accumulates the sequence's gradients; ``get_grad_test()`` returns them.

``init`` is a dict in torch's layout (the course's Linear transposes its ``W``; these keep
torch's shapes, gate blocks stacked along dim 0 in torch's order):
``{'W_ih': (G*hidden, input), 'W_hh': (G*hidden, hidden), 'b_ih': (G*hidden,),
'b_hh': (G*hidden,)}`` with G = 1 (RNNCell) or 4 (LSTMCell, gates i, f, g, o). Keys may be
left out; the layer takes the dtype of the first tensor given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from SciDevNN import SDbase
from scidevnn_rnn import lstm_cell, rnn_cell, tanh
from scidevnn_rnn.cell_base import RNNCellBase


def _cell_layout(cell: RNNCellBase, chunks: int) -> SDbase.InitLayout:
    gates = chunks * cell.hidden_size
    return {
        "W_ih": ("weight_ih", None, (gates, cell.input_size)),
        "W_hh": ("weight_hh", None, (gates, cell.hidden_size)),
        "b_ih": ("bias_ih", None, (gates,)),
        "b_hh": ("bias_hh", None, (gates,)),
    }


class _CourseCell(SDbase.Module):
    """Shared by the course cells: input checks and ``get_grad_test``."""

    cell: RNNCellBase

    def check_input(self, *inputs: Any) -> None:
        if not 1 <= len(inputs) <= 2:
            raise TypeError(f"{type(self).__name__}: expected (x) or (x, hx), got {len(inputs)}")
        self.cell.check_input(inputs[0])

    def get_grad_test(self) -> dict[str, Any]:
        """``gradW_ih``, ``gradW_hh``, ``gradB_ih``, ``gradB_hh`` (torch's ``.grad`` of each
        parameter, summed over every backward since ``zero_grad``) and, from the last backward,
        ``gradOut`` (d loss / d x) and ``gradH`` (d loss / d h; LSTMCell also ``gradC``)."""
        grads: dict[str, Any] = {
            "gradW_ih": self.cell.weight_ih.grad,
            "gradW_hh": self.cell.weight_hh.grad,
        }
        if self.cell.bias_ih is not None and self.cell.bias_hh is not None:
            grads["gradB_ih"] = self.cell.bias_ih.grad
            grads["gradB_hh"] = self.cell.bias_hh.grad
        grad_x, grad_state = self.grad_input if self.grad_input is not None else (None, None)
        grads["gradOut"] = grad_x
        if isinstance(grad_state, tuple):
            grads["gradH"], grads["gradC"] = grad_state
        else:
            grads["gradH"] = grad_state
        return grads


class RNNCell(_CourseCell):
    """``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``: wraps ``scidevnn_rnn.RNNCell``.

    ``cell(x, h=None)`` -> h'; ``backward(x, h, grad_h')`` -> ``(grad_x, grad_h)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        init: Mapping[str, Any] | None = None,
        optimizer: SDbase.Optimizer | None = None,
    ) -> None:
        self.cell = rnn_cell.RNNCell(
            input_size, hidden_size, bias, nonlinearity, dtype=SDbase.init_dtype(init)
        )
        super().__init__(self.cell, optimizer)
        self.load_init(init, _cell_layout(self.cell, 1))


class LSTMCell(_CourseCell):
    """One LSTM step: wraps ``scidevnn_rnn.LSTMCell`` (gate order i, f, g, o).

    ``cell(x, (h, c)=None)`` -> ``(h', c')``; ``backward(x, (h, c), (grad_h', grad_c'))`` ->
    ``(grad_x, (grad_h, grad_c))``; a ``None`` gradient means zeros.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: Mapping[str, Any] | None = None,
        optimizer: SDbase.Optimizer | None = None,
    ) -> None:
        self.cell = lstm_cell.LSTMCell(input_size, hidden_size, bias, dtype=SDbase.init_dtype(init))
        super().__init__(self.cell, optimizer)
        self.load_init(init, _cell_layout(self.cell, 4))


class Tanh(SDbase.Module):
    """``tanh(x)`` element-wise: ``backward(x, grad_output)``; ``get_grad_test()`` returns
    the input gradient."""

    def __init__(self) -> None:
        super().__init__(tanh.Tanh())
