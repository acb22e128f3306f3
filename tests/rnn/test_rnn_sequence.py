"""RNN, LSTM and GRU over whole sequences against torch.nn.RNN/LSTM/GRU under autograd:
layers, directions, batch_first, unbatched input, initial states, projections, no bias,
dropout between layers, state_dict keys, initialisation, gradients of every kind, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rnn_reference import DTYPES, initial_states, make_pair

import scidevnn
from scidevnn.errors import BackwardError
from scidevnn.module import Module
from scidevnn.testing import assert_close, check_finite_differences, check_layer
from scidevnn_rnn import GRU, LSTM, RNN

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

INPUT, HIDDEN, STEPS, BATCH = 4, 5, 5, 3

LAYERS: list[tuple[str, dict[str, Any]]] = [
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu"}),
    ("LSTM", {}),
    ("LSTM", {"proj_size": 3}),
    ("GRU", {}),
]
LAYER_IDS = ["rnn", "rnn-relu", "lstm", "lstm-proj", "gru"]


def make_input(batch_first: bool, batched: bool, dtype: torch.dtype) -> torch.Tensor:
    if not batched:
        return torch.randn(STEPS, INPUT, dtype=dtype)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    return torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-first", "batch-first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(("name", "options"), LAYERS, ids=LAYER_IDS)
def test_sequence_layer_matches_torch(
    name: str,
    options: dict[str, Any],
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    with_hx: bool,
    dtype: torch.dtype,
) -> None:
    ours, theirs = make_pair(
        name,
        INPUT,
        HIDDEN,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dtype=dtype,
        **options,
    )
    x = make_input(batch_first, True, dtype)
    inputs = (x, initial_states(ours, BATCH, dtype)) if with_hx else x
    check_layer(ours, theirs, inputs)


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize(("name", "options"), LAYERS, ids=LAYER_IDS)
def test_sequence_layer_unbatched(name: str, options: dict[str, Any], with_hx: bool) -> None:
    ours, theirs = make_pair(
        name, INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=torch.float64, **options
    )
    x = make_input(False, False, torch.float64)
    check_layer(ours, theirs, (x, initial_states(ours, None, torch.float64)) if with_hx else x)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_sequence_layer_without_bias_and_three_layers(name: str) -> None:
    ours, theirs = make_pair(
        name, INPUT, HIDDEN, num_layers=3, bias=False, bidirectional=True, dtype=torch.float64
    )
    assert not any("bias" in key for key in ours.state_dict())
    x = make_input(False, True, torch.float64)
    check_layer(ours, theirs, (x, initial_states(ours, BATCH, torch.float64)))


@pytest.mark.parametrize(("name", "options"), LAYERS, ids=LAYER_IDS)
def test_sequence_layer_finite_differences(name: str, options: dict[str, Any]) -> None:
    ours, _ = make_pair(
        name, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **options
    )
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    hx = initial_states(ours, 2, torch.float64)
    check_finite_differences(ours, (x, hx), max_entries=16)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_dropout_between_layers_in_eval_equals_torch(name: str) -> None:
    ours, theirs = make_pair(name, INPUT, HIDDEN, num_layers=3, dropout=0.5, dtype=torch.float64)
    ours.eval()
    check_layer(ours, theirs, make_input(False, True, torch.float64))


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_dropout_one_in_training_zeroes_the_upper_layers_input_like_torch(name: str) -> None:
    """p = 1 makes torch's dropout deterministic: the training path must then agree exactly."""
    ours, theirs = make_pair(name, INPUT, HIDDEN, num_layers=2, dropout=1.0, dtype=torch.float64)
    assert ours.training
    x = make_input(True, True, torch.float64)
    grad_output = torch.randn(BATCH, STEPS, HIDDEN, dtype=torch.float64)
    no_state_grad = (None, None) if name == "LSTM" else None
    check_layer(ours, theirs, x, grad_output=(grad_output, no_state_grad))
    assert not ours.weight_ih_l0.grad.any()  # nothing reaches the first layer through output


class Reseeded(Module):
    """Runs ``layer`` with the same random numbers on every call (dropout masks repeat)."""

    def __init__(self, layer: Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *inputs: Any) -> Any:
        torch.manual_seed(1234)
        return self.layer(*inputs)

    def backward(self, grad: Any) -> Any:
        return self.layer.backward(grad)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_dropout_in_training_backward_matches_its_forward(name: str) -> None:
    layer, _ = make_pair(name, 3, 4, num_layers=3, dropout=0.4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with scidevnn.no_grad():
        train_out = Reseeded(layer)(x)[0]
        layer.eval()
        eval_out = layer(x)[0]
        layer.train()
    assert not torch.allclose(train_out, eval_out)  # dropout did something
    check_finite_differences(Reseeded(layer), x, max_entries=12)


def test_dropout_masks_scale_like_torch() -> None:
    """Kept units are scaled by 1 / (1 - p): the mean of many masks is close to one."""
    layer = LSTM(2, 200, num_layers=2, dropout=0.25)
    layer(torch.randn(3, 50, 2))
    (ctx,) = layer._saved[-1]
    keep = ctx.dropout_masks[0]
    assert set(keep.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert abs(keep.mean().item() - 1.0) < 0.02
    assert ctx.dropout_masks[1] is None  # no dropout after the last layer


def test_state_dict_keys_and_order_equal_torch() -> None:
    for name, options in LAYERS:
        ours, theirs = make_pair(
            name, INPUT, HIDDEN, num_layers=2, bidirectional=True, **options
        )  # also checks the values drawn from the same seed
        assert list(ours.state_dict()) == list(theirs.state_dict())
        shapes = {key: tuple(value.shape) for key, value in theirs.state_dict().items()}
        assert {key: tuple(value.shape) for key, value in ours.state_dict().items()} == shapes
    keys = list(LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=1).state_dict())
    assert keys[:6] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "weight_hr_l0",
        "weight_ih_l0_reverse",
    ]


def test_load_state_dict_both_ways() -> None:
    theirs = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    ours = GRU(3, 4, num_layers=2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3)
    with scidevnn.no_grad(), torch.no_grad():
        assert_close(ours(x)[0], theirs(x)[0], "GRU output after loading torch's weights")
    back = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_gradients_accumulate_over_calls_like_torch() -> None:
    ours, theirs = make_pair("LSTM", INPUT, HIDDEN, dtype=torch.float64)
    xs = [make_input(False, True, torch.float64) for _ in range(3)]
    grads = [torch.randn(STEPS, BATCH, HIDDEN, dtype=torch.float64) for _ in range(3)]
    for x in xs:
        ours(x)
    for grad in reversed(grads):
        ours.backward(grad)
    for x, grad in zip(xs, grads, strict=True):
        theirs(x)[0].backward(grad)
    torch_params = dict(theirs.named_parameters())
    for key, param in ours.named_parameters():
        assert_close(param.grad, torch_params[key].grad, f"accumulated {key}.grad")


def test_backward_takes_any_part_of_the_gradient() -> None:
    """(grad_output, (grad_h_n, grad_c_n)) with None parts, a bare tensor, or all None."""
    ours, theirs = make_pair("LSTM", INPUT, HIDDEN, num_layers=2, dtype=torch.float64)
    x = make_input(False, True, torch.float64)
    grad_h = torch.randn(2, BATCH, HIDDEN, dtype=torch.float64)
    check_layer(ours, theirs, x, grad_output=(None, (grad_h, None)))
    check_layer(ours, theirs, x, grad_output=(None, (None, grad_h)))
    ours(x)
    assert not ours.backward((None, None)).any()
    rnn = RNN(INPUT, HIDDEN, dtype=torch.float64)
    rnn(x)
    assert rnn.backward(torch.zeros(STEPS, BATCH, HIDDEN)).shape == x.shape


def test_output_like_torch_contiguity_and_dtype() -> None:
    ours = LSTM(INPUT, HIDDEN, batch_first=True, dtype=torch.float64)
    output, (h_n, c_n) = ours(make_input(True, True, torch.float64))
    assert output.shape == (BATCH, STEPS, HIDDEN)
    assert output.dtype == h_n.dtype == c_n.dtype == torch.float64
    assert h_n.shape == c_n.shape == (1, BATCH, HIDDEN)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_skips_input_gradient_and_saves_nothing_under_no_grad(name: str) -> None:
    ours, _ = make_pair(name, INPUT, HIDDEN, num_layers=2)
    ours.needs_input_grad = False
    x = make_input(False, True, torch.float32)
    output, _ = ours(x)
    assert ours.backward(torch.ones_like(output)) is None
    assert ours.weight_ih_l0.grad is not None
    with scidevnn.no_grad():
        ours(x)
    assert ours.pending_backward == 0


def test_large_inputs_stay_finite() -> None:
    ours, theirs = make_pair("LSTM", INPUT, HIDDEN, bidirectional=True, dtype=torch.float64)
    x = make_input(False, True, torch.float64) * 1e4
    output = check_layer(ours, theirs, x)
    assert bool(output[0].isfinite().all())


def test_errors_name_the_layer_and_shape() -> None:
    lstm = LSTM(INPUT, HIDDEN, num_layers=2)
    with pytest.raises(ValueError, match=r"LSTM: expected input of shape \(L, N, 4\)"):
        lstm(torch.randn(STEPS, BATCH, 3))
    with pytest.raises(ValueError, match=r"LSTM: expected input of shape"):
        lstm(torch.randn(2, STEPS, BATCH, INPUT))
    with pytest.raises(ValueError, match="LSTM: hx must be a pair"):
        lstm(torch.randn(STEPS, BATCH, INPUT), torch.randn(2, BATCH, HIDDEN))
    with pytest.raises(ValueError, match=r"LSTM: c_0 has shape \(1, 3, 5\), expected \(2, 3, 5\)"):
        lstm(
            torch.randn(STEPS, BATCH, INPUT),
            (torch.randn(2, BATCH, HIDDEN), torch.randn(1, BATCH, HIDDEN)),
        )
    with pytest.raises(ValueError, match=r"GRU: h_0 has shape \(1, 5\), expected \(1, 3, 5\)"):
        GRU(INPUT, HIDDEN)(torch.randn(STEPS, BATCH, INPUT), torch.randn(1, HIDDEN))
    with pytest.raises(ValueError, match="sequence length > 0"):
        GRU(INPUT, HIDDEN)(torch.randn(0, BATCH, INPUT))
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(INPUT, HIDDEN, proj_size=HIDDEN)
    with pytest.raises(ValueError, match="dropout"):
        RNN(INPUT, HIDDEN, dropout=1.5)
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        GRU(INPUT, HIDDEN, dropout=0.5)
    rnn = RNN(INPUT, HIDDEN)
    rnn(torch.randn(STEPS, BATCH, INPUT))
    with pytest.raises(BackwardError, match=r"RNN.backward: grad_output has shape"):
        rnn.backward(torch.randn(STEPS, BATCH, HIDDEN + 1))


def test_repr_like_torch() -> None:
    for ours, theirs in (
        (LSTM(3, 4, num_layers=2, batch_first=True), torch.nn.LSTM(3, 4, 2, batch_first=True)),
        (GRU(3, 4, bidirectional=True, dropout=0.0), torch.nn.GRU(3, 4, bidirectional=True)),
        (LSTM(3, 4, proj_size=2, bias=False), torch.nn.LSTM(3, 4, proj_size=2, bias=False)),
    ):
        assert repr(ours) == repr(theirs)
