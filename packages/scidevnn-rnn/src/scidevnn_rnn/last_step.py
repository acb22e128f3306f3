"""LastStep: the final hidden state of a sequence layer, so RNN/LSTM/GRU fit in a Sequential.

A classifier that reads a sequence (a 28x28 image as 28 rows of 28 features) is::

    Sequential(Flatten(1, -2), LSTM(28, 128, batch_first=True), LastStep(), Linear(128, 10))

``Flatten(1, -2)`` turns (N, 1, 28, 28) into (N, 28, 28) and leaves (N, 28, 28) alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scidevnn.module import Module


class LastStep(Module):
    """``(output, h_n)`` or ``(output, (h_n, c_n))`` -> the last layer's final hidden state.

    Shapes: h_n (num_layers*D, N, H) -> (N, D*H) (unbatched: (num_layers*D, H) -> (D*H,)).
    With one direction this is ``h_n[-1]``; bidirectional, the forward direction's state
    (after each sequence's own last step) then the reverse direction's (after step 0),
    the order of the features in ``output``. With variable ``lengths`` this is each
    sequence's own last state, not the padded ``output[:, -1]``.

    Backward: ``g`` (N, D*H) goes to those rows of ``grad_h_n``, zero elsewhere; returns
    ``(None, grad_h_n)`` (``(None, (grad_h_n, None))`` after an LSTM), the form the sequence
    layers' ``backward`` takes: no gradient reaches ``output``.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, inputs: tuple[Tensor, Any]) -> Tensor:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                "LastStep: expected the (output, h_n) pair of an RNN, LSTM or GRU, got "
                f"{type(inputs).__name__}"
            )
        output, states = inputs
        has_cell = isinstance(states, (tuple, list))
        h_n: Tensor = states[0] if has_cell else states
        hidden = h_n.shape[-1]
        directions = output.shape[-1] // hidden if hidden else 0
        if directions not in (1, 2) or directions * hidden != output.shape[-1]:
            raise ValueError(
                f"LastStep: output of shape {tuple(output.shape)} does not match h_n of shape "
                f"{tuple(h_n.shape)}"
            )
        last = h_n[-directions:]
        self.save_for_backward(h_n.shape, directions, has_cell)
        if directions == 1:
            return last[0]
        return torch.cat((last[0], last[1]), dim=-1)

    def backward(self, grad_output: Tensor) -> tuple[None, Any]:
        shape, directions, has_cell = self.saved_tensors()
        grad_h = grad_output.new_zeros(shape)
        hidden = shape[-1]
        for direction in range(directions):
            index = shape[0] - directions + direction
            grad_h[index] = grad_output[..., direction * hidden : (direction + 1) * hidden]
        return None, ((grad_h, None) if has_cell else grad_h)
