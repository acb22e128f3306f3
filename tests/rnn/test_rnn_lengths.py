"""Variable lengths in one batch: ``forward(input, hx, lengths)`` against torch's
``pack_padded_sequence`` -> RNN/LSTM/GRU -> ``pad_packed_sequence(total_length=L)``.

Padded steps take no part in the recurrence, their outputs are zero, their input gradients are
zero, the reverse direction starts at each sequence's own last step and h_n holds each
sequence's state at its own last step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rnn_reference import DTYPES, initial_states, make_pair
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from scidevnn.module import Module
from scidevnn.testing import assert_close, check_finite_differences, check_layer
from scidevnn_rnn import GRU, LSTM

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

INPUT, HIDDEN, STEPS = 3, 4, 7


class OursWithLengths(Module):
    """``layer(x, hx, lengths)``; backward returns one gradient per input (None for lengths)."""

    def __init__(self, layer: Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, hx: Any, lengths: torch.Tensor) -> Any:
        return self.layer(x, hx, lengths)

    def backward(self, grad: Any) -> Any:
        result = self.layer.backward(grad)
        if isinstance(result, tuple):
            return (*result, None)
        return result, None, None


class TorchWithLengths(torch.nn.Module):
    """torch's way to run padded sequences: pack, run, pad back to the input's length."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, hx: Any, lengths: torch.Tensor) -> Any:
        batch_first = bool(getattr(self.layer, "batch_first", False))
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        output, states = self.layer(packed, hx)
        total = x.shape[1] if batch_first else x.shape[0]
        padded, _ = pad_packed_sequence(output, batch_first=batch_first, total_length=total)
        return padded, states


LAYERS: list[tuple[str, dict[str, Any]]] = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 2}),
    ("GRU", {}),
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu"}),
]
LAYER_IDS = ["lstm", "lstm-proj", "gru", "rnn", "rnn-relu"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "batch_first"),
    [(1, False, False), (1, True, True), (2, True, False), (2, False, True)],
    ids=["1-uni", "1-bi-bf", "2-bi", "2-uni-bf"],
)
@pytest.mark.parametrize(("name", "options"), LAYERS, ids=LAYER_IDS)
def test_lengths_match_pack_padded_sequence(
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
    lengths = torch.tensor([5, 7, 1, 3, 5])  # unsorted, a tie, a length-1 sequence
    batch = len(lengths)
    shape = (batch, STEPS, INPUT) if batch_first else (STEPS, batch, INPUT)
    x = torch.randn(shape, dtype=dtype)
    hx = initial_states(ours, batch, dtype) if with_hx else None
    output = check_layer(OursWithLengths(ours), TorchWithLengths(theirs), (x, hx, lengths))
    padded = output[0] if batch_first else output[0].transpose(0, 1)
    for row, length in enumerate(lengths.tolist()):
        assert not padded[row, length:].any()  # zero at padded steps, as pad_packed_sequence


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_padding_gets_zero_gradient_and_has_no_effect(name: str) -> None:
    ours, _ = make_pair(name, INPUT, HIDDEN, num_layers=2, bidirectional=True)
    lengths = [2, 6, 4]
    x = torch.randn(STEPS, 3, INPUT)
    noisy = x.clone()
    for row, length in enumerate(lengths):
        noisy[length:, row] = torch.randn(STEPS - length, INPUT) * 1e6
    noisy[-1, 0, 0] = float("nan")
    noisy[-1, 2, 1] = float("inf")
    clean_out, clean_states = ours(x, None, lengths)
    grad = torch.randn_like(clean_out)
    clean_grad = ours.backward(grad)
    clean_param_grads = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    noisy_out, noisy_states = ours(noisy, None, lengths)
    noisy_grad = ours.backward(grad)
    assert torch.equal(clean_out, noisy_out)
    h_clean = clean_states[0] if name == "LSTM" else clean_states
    h_noisy = noisy_states[0] if name == "LSTM" else noisy_states
    assert torch.equal(h_clean, h_noisy)
    assert torch.equal(clean_grad, noisy_grad)
    for clean, param in zip(clean_param_grads, ours.parameters(), strict=True):
        assert torch.equal(clean, param.grad)
    for row, length in enumerate(lengths):
        assert not noisy_grad[length:, row].any()


def test_lengths_as_list_and_input_longer_than_every_sequence() -> None:
    """The output keeps the input's length (zeros past the longest sequence)."""
    ours, theirs = make_pair("GRU", INPUT, HIDDEN, bidirectional=True, dtype=torch.float64)
    lengths = [3, 2, 3]
    x = torch.randn(STEPS, 3, INPUT, dtype=torch.float64)
    output, h_n = ours(x, None, lengths)
    assert output.shape == (STEPS, 3, 2 * HIDDEN)
    assert not output[3:].any()
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    their_out, their_h = theirs(packed)
    their_padded, _ = pad_packed_sequence(their_out, total_length=STEPS)
    assert_close(output, their_padded.detach(), "GRU output")
    assert_close(h_n, their_h.detach(), "GRU h_n")


def test_full_lengths_equal_no_lengths() -> None:
    ours, _ = make_pair("LSTM", INPUT, HIDDEN, bidirectional=True)
    x = torch.randn(STEPS, 2, INPUT)
    with_lengths = ours(x, None, torch.tensor([STEPS, STEPS]))
    ours.clear_saved()
    without = ours(x)
    assert torch.equal(with_lengths[0], without[0])


def test_lengths_finite_differences() -> None:
    layer, _ = make_pair("LSTM", 2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    check_finite_differences(
        OursWithLengths(layer), (x, None, torch.tensor([2, 5, 3])), max_entries=16
    )


def test_lengths_errors() -> None:
    lstm = LSTM(INPUT, HIDDEN)
    x = torch.randn(STEPS, 3, INPUT)
    with pytest.raises(ValueError, match=r"LSTM: lengths must lie in \[1, 7\]"):
        lstm(x, None, [0, 3, 3])
    with pytest.raises(ValueError, match=r"LSTM: lengths must lie in \[1, 7\]"):
        lstm(x, None, [8, 3, 3])
    with pytest.raises(ValueError, match=r"LSTM: lengths must have shape \(3,\)"):
        lstm(x, None, [3, 3])
    with pytest.raises(ValueError, match="LSTM: lengths must be integers"):
        lstm(x, None, torch.tensor([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="GRU: lengths needs batched input"):
        GRU(INPUT, HIDDEN)(torch.randn(STEPS, INPUT), None, [3])
