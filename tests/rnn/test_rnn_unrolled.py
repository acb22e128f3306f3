"""The course's own request: Tanh and every cell applied step by step to sequences of every
length from 1 to 12, batch 1 and more, with and without initial states, with the loss on every
step or on the last step only, in float32 and float64; forward and every gradient (inputs,
initial states, parameters) against the torch cell unrolled under autograd.

One SciDevNN module serves every step: T forward calls, then T backward calls in reverse order,
each pairing with its own step, parameter gradients adding up over the sequence.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rnn_reference import DTYPES, leaf, make_pair

from scidevnn.testing import assert_close
from scidevnn_rnn import Tanh

LENGTHS = range(1, 13)
INPUT, HIDDEN = 3, 4
CELLS = [
    ("RNNCell", {"nonlinearity": "tanh"}),
    ("RNNCell", {"nonlinearity": "relu"}),
    ("LSTMCell", {}),
    ("GRUCell", {}),
]


def unrolled_torch(
    cell: torch.nn.Module, xs: torch.Tensor, state: Any, lstm: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every step's h (and c for the LSTM) of the torch cell, recorded by autograd."""
    hs, cs = [], []
    for t in range(xs.shape[0]):
        state = cell(xs[t], state)
        hs.append(state[0] if lstm else state)
        if lstm:
            cs.append(state[1])
    return hs, cs


def check_cell_sequence(
    name: str,
    options: dict[str, Any],
    length: int,
    batch: int | None,
    initial_state: bool,
    every_step: bool,
    dtype: torch.dtype,
) -> None:
    lstm = name == "LSTMCell"
    ours, theirs = make_pair(name, INPUT, HIDDEN, dtype=dtype, seed=length, **options)
    lead = () if batch is None else (batch,)
    xs = torch.randn(length, *lead, INPUT, dtype=dtype)
    h0 = torch.randn(*lead, HIDDEN, dtype=dtype)
    c0 = torch.randn(*lead, HIDDEN, dtype=dtype)
    grad_hs = torch.randn(length, *lead, HIDDEN, dtype=dtype)
    grad_cs = torch.randn(length, *lead, HIDDEN, dtype=dtype)
    if not every_step:
        grad_hs[:-1] = 0
        grad_cs.zero_()

    # torch: the cell unrolled under autograd
    xs_ref, h0_ref, c0_ref = leaf(xs), leaf(h0), leaf(c0)
    start = ((h0_ref, c0_ref) if lstm else h0_ref) if initial_state else None
    hs_ref, cs_ref = unrolled_torch(theirs, xs_ref, start, lstm)
    loss = sum((h * g).sum() for h, g in zip(hs_ref, grad_hs, strict=True))
    if lstm:
        loss = loss + sum((c * g).sum() for c, g in zip(cs_ref, grad_cs, strict=True))
    assert isinstance(loss, torch.Tensor)
    torch.autograd.backward(loss)

    # SciDevNN: T forward calls, then T backward calls in reverse order
    state: Any = ((h0, c0) if lstm else h0) if initial_state else None
    for t in range(length):
        state = ours(xs[t], state)
        h = state[0] if lstm else state
        assert_close(h, hs_ref[t].detach(), f"{name} h at step {t}")
        if lstm:
            assert_close(state[1], cs_ref[t].detach(), f"{name} c at step {t}")
    assert ours.pending_backward == length
    grad_xs: list[torch.Tensor] = []
    grad_h: torch.Tensor | None = None
    grad_c: torch.Tensor | None = None
    for t in reversed(range(length)):
        total_h = grad_hs[t] if grad_h is None else grad_h + grad_hs[t]
        if lstm:
            total_c = grad_cs[t] if grad_c is None else grad_c + grad_cs[t]
            grad_x, (grad_h, grad_c) = ours.backward((total_h, total_c))
        else:
            grad_x, grad_h = ours.backward(total_h)
        grad_xs.append(grad_x)
    assert ours.pending_backward == 0

    label = f"{name}{options} T={length} batch={batch} h0={initial_state}"
    assert_close(torch.stack(grad_xs[::-1]), xs_ref.grad, f"{label}: input gradient")
    if initial_state:
        assert_close(grad_h, h0_ref.grad, f"{label}: initial h gradient")
        if lstm:
            assert_close(grad_c, c0_ref.grad, f"{label}: initial c gradient")
    else:
        assert grad_h is None and grad_c is None  # no initial state, nothing to return
    torch_params = dict(theirs.named_parameters())
    for param_name, param in ours.named_parameters():
        assert_close(param.grad, torch_params[param_name].grad, f"{label}: {param_name}.grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("every_step", [True, False], ids=["loss-every-step", "loss-last-step"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("name", "options"), CELLS, ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_cell_over_every_length(
    name: str,
    options: dict[str, Any],
    batch: int,
    initial_state: bool,
    every_step: bool,
    dtype: torch.dtype,
) -> None:
    for length in LENGTHS:
        check_cell_sequence(name, options, length, batch, initial_state, every_step, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "options"), CELLS, ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_cell_over_every_length_unbatched(
    name: str, options: dict[str, Any], dtype: torch.dtype
) -> None:
    for length in LENGTHS:
        for initial_state in (False, True):
            check_cell_sequence(name, options, length, None, initial_state, True, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("every_step", [True, False], ids=["loss-every-step", "loss-last-step"])
@pytest.mark.parametrize("batch", [1, 3])
def test_tanh_over_every_length(batch: int, every_step: bool, dtype: torch.dtype) -> None:
    """One Tanh applied at each step of a recurrence h_t = tanh(x_t + h_{t-1})."""
    layer = Tanh()
    for length in LENGTHS:
        xs = torch.randn(length, batch, 5, dtype=dtype) * 3
        grad_hs = torch.randn(length, batch, 5, dtype=dtype)
        if not every_step:
            grad_hs[:-1] = 0
        xs_ref = leaf(xs)
        h_ref = torch.zeros(batch, 5, dtype=dtype)
        loss = torch.zeros((), dtype=dtype)
        for t in range(length):
            h_ref = torch.tanh(xs_ref[t] + h_ref)
            loss = loss + (h_ref * grad_hs[t]).sum()
        torch.autograd.backward(loss)

        h = torch.zeros(batch, 5, dtype=dtype)
        for t in range(length):
            h = layer(xs[t] + h)
        assert_close(h, h_ref.detach(), f"Tanh T={length} output")
        grad_xs: list[torch.Tensor] = []
        grad = torch.zeros(batch, 5, dtype=dtype)
        for t in reversed(range(length)):
            grad_x = layer.backward(grad + grad_hs[t])
            assert grad_x is not None
            grad_xs.append(grad_x)
            grad = grad_x
        assert_close(torch.stack(grad_xs[::-1]), xs_ref.grad, f"Tanh T={length} input grad")
        assert layer.pending_backward == 0
