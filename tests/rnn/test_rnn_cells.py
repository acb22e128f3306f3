"""Tanh, RNNCell, LSTMCell and GRUCell one step at a time: torch's parameters and
initialisation, forward and backward against torch autograd (``check_layer``) and against
finite differences, no bias, large inputs, ``None`` gradients, skipped input gradients and
clear errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rnn_reference import DTYPES, make_pair

import scidevnn
from scidevnn.errors import BackwardError
from scidevnn.testing import assert_close, check_finite_differences, check_layer
from scidevnn_rnn import GRUCell, LSTMCell, RNNCell, Tanh

CELL_CASES = [
    ("RNNCell", {}),
    ("RNNCell", {"nonlinearity": "relu"}),
    ("RNNCell", {"bias": False}),
    ("LSTMCell", {}),
    ("LSTMCell", {"bias": False}),
    ("GRUCell", {}),
    ("GRUCell", {"bias": False}),
]
CELL_IDS = ["rnn", "rnn-relu", "rnn-nobias", "lstm", "lstm-nobias", "gru", "gru-nobias"]


def state_for(name: str, lead: tuple[int, ...], hidden: int, dtype: torch.dtype) -> Any:
    h = torch.randn(*lead, hidden, dtype=dtype)
    if name == "LSTMCell":
        return h, torch.randn(*lead, hidden, dtype=dtype)
    return h


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead", [(1,), (5,), ()], ids=["batch1", "batch5", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
@pytest.mark.parametrize(("name", "options"), CELL_CASES, ids=CELL_IDS)
def test_cell_step_matches_torch(
    name: str, options: dict[str, Any], with_state: bool, lead: tuple[int, ...], dtype: torch.dtype
) -> None:
    ours, theirs = make_pair(name, 4, 6, dtype=dtype, **options)
    x = torch.randn(*lead, 4, dtype=dtype)
    state = state_for(name, lead, 6, dtype) if with_state else None
    if name != "LSTMCell" or with_state:
        check_layer(ours, theirs, (x, state))
        return
    # without a state LSTMCell returns (grad_x, (None, None)): one more leaf than inputs
    grad = (torch.randn(*lead, 6, dtype=dtype), torch.randn(*lead, 6, dtype=dtype))
    check_layer(ours, theirs, (x, None), grad_output=grad, check_input_grad=False)
    x_ref = x.clone().requires_grad_(True)
    h, c = theirs(x_ref)
    torch.autograd.backward([h, c], list(grad))
    ours(x)
    grad_x, (grad_h, grad_c) = ours.backward(grad)
    assert grad_h is None and grad_c is None
    assert_close(grad_x, x_ref.grad, "LSTMCell input gradient without a state")


@pytest.mark.parametrize(("name", "options"), CELL_CASES, ids=CELL_IDS)
def test_cell_step_finite_differences(name: str, options: dict[str, Any]) -> None:
    ours, _ = make_pair(name, 3, 4, dtype=torch.float64, **options)
    x = torch.randn(2, 3, dtype=torch.float64)
    check_finite_differences(ours, (x, state_for(name, (2,), 4, torch.float64)))


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_large_inputs_stay_finite_and_match(name: str) -> None:
    ours, theirs = make_pair(name, 4, 5, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64) * 1e4
    output = check_layer(ours, theirs, (x, state_for(name, (3,), 5, torch.float64)))
    leaves = output if isinstance(output, tuple) else (output,)
    assert all(bool(t.isfinite().all()) for t in leaves)


def test_cell_init_follows_torch_seed_and_bound() -> None:
    for name in ("RNNCell", "LSTMCell", "GRUCell"):
        ours, _ = make_pair(name, 7, 16, seed=3)  # make_pair asserts equality with torch
        bound = 1 / 16**0.5
        assert all(bool((p.data.abs() <= bound).all()) for p in ours.parameters())


def test_cell_parameter_shapes_and_state_dict_round_trip() -> None:
    lstm = LSTMCell(3, 5)
    shapes = {name: tuple(p.shape) for name, p in lstm.named_parameters()}
    assert shapes == {
        "weight_ih": (20, 3),
        "weight_hh": (20, 5),
        "bias_ih": (20,),
        "bias_hh": (20,),
    }
    assert GRUCell(3, 5).weight_ih.shape == (15, 3)
    assert RNNCell(3, 5, bias=False).bias_ih is None
    theirs = torch.nn.LSTMCell(3, 5)
    lstm.load_state_dict(theirs.state_dict())
    other = torch.nn.LSTMCell(3, 5)
    other.load_state_dict(lstm.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)


def test_lstm_cell_none_gradients_mean_zeros() -> None:
    ours, theirs = make_pair("LSTMCell", 3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    h, c = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    # only c' carries a gradient: (None, g) must equal (zeros, g)
    check_layer(ours, theirs, (x, (h, c)), grad_output=(None, torch.randn(2, 4).double()))
    check_layer(ours, theirs, (x, (h, c)), grad_output=(torch.randn(2, 4).double(), None))
    ours(x, (h, c))
    grad_x, (grad_h, grad_c) = ours.backward(None)
    assert not grad_x.any() and not grad_h.any() and not grad_c.any()


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_skips_input_gradient_when_not_needed(name: str) -> None:
    ours, _ = make_pair(name, 3, 4)
    ours.needs_input_grad = False
    x = torch.randn(2, 3)
    state = state_for(name, (2,), 4, torch.float32)
    out = ours(x, state)
    grad = tuple(torch.ones_like(t) for t in out) if isinstance(out, tuple) else out
    grad_x, grad_state = ours.backward(grad)
    assert grad_x is None
    assert grad_state is not None
    assert ours.weight_ih.grad is not None


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_no_grad_saves_nothing(name: str) -> None:
    ours, _ = make_pair(name, 3, 4)
    with scidevnn.no_grad():
        for _ in range(5):
            ours(torch.randn(2, 3))
    assert ours.pending_backward == 0
    with pytest.raises(BackwardError, match="no pending forward"):
        ours.backward(None)


def test_cell_errors_name_the_layer_and_shape() -> None:
    with pytest.raises(ValueError, match=r"LSTMCell: input has 5 features, expected 3"):
        LSTMCell(3, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"RNNCell: expected input of shape \(N, 3\)"):
        RNNCell(3, 4)(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match=r"GRUCell: hx has shape \(3, 4\), expected \(2, 4\)"):
        GRUCell(3, 4)(torch.randn(2, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="LSTMCell: hx must be a pair"):
        LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        RNNCell(3, 4, nonlinearity="gelu")
    cell = RNNCell(3, 4)
    cell(torch.randn(2, 3))
    with pytest.raises(BackwardError, match=r"grad_h has shape \(2, 5\), expected \(2, 4\)"):
        cell.backward(torch.randn(2, 5))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4, 5)])
def test_tanh_matches_torch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.randn(shape, dtype=dtype) * 4
    check_layer(Tanh(), torch.nn.Tanh(), x)


def test_tanh_finite_differences_and_saturation() -> None:
    check_finite_differences(Tanh(), torch.randn(3, 4, dtype=torch.float64))
    x = torch.tensor([-1e4, -30.0, 0.0, 30.0, 1e4], dtype=torch.float64)
    check_layer(Tanh(), torch.nn.Tanh(), x)


def test_tanh_skips_input_gradient_when_not_needed() -> None:
    layer = Tanh()
    layer.needs_input_grad = False
    layer(torch.randn(3))
    assert layer.backward(torch.ones(3)) is None
    assert layer.pending_backward == 0


def test_cells_repr_like_torch() -> None:
    assert repr(LSTMCell(3, 4)) == "LSTMCell(3, 4)"
    assert repr(RNNCell(3, 4, bias=False, nonlinearity="relu")) == repr(
        torch.nn.RNNCell(3, 4, bias=False, nonlinearity="relu")
    )
    assert repr(GRUCell(3, 4)) == repr(torch.nn.GRUCell(3, 4))
