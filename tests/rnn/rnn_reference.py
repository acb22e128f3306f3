"""Helpers for the rnn tests: build a SciDevNN layer and its torch.nn namesake with the same
weights (drawn from the same seed, which also checks that the initialisation matches)."""

from __future__ import annotations

from typing import Any

import torch

import scidevnn_rnn

DTYPES = [torch.float32, torch.float64]

PAIRS: dict[str, tuple[type[Any], type[torch.nn.Module]]] = {
    "RNNCell": (scidevnn_rnn.RNNCell, torch.nn.RNNCell),
    "LSTMCell": (scidevnn_rnn.LSTMCell, torch.nn.LSTMCell),
    "GRUCell": (scidevnn_rnn.GRUCell, torch.nn.GRUCell),
    "RNN": (scidevnn_rnn.RNN, torch.nn.RNN),
    "LSTM": (scidevnn_rnn.LSTM, torch.nn.LSTM),
    "GRU": (scidevnn_rnn.GRU, torch.nn.GRU),
}


def make_pair(name: str, *args: Any, seed: int = 0, **kwargs: Any) -> tuple[Any, torch.nn.Module]:
    """(ours, torch's) built from the same seed; asserts their state dicts are identical."""
    ours_cls, torch_cls = PAIRS[name]
    torch.manual_seed(seed)
    ours = ours_cls(*args, **kwargs)
    torch.manual_seed(seed)
    theirs = torch_cls(*args, **kwargs)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)
    for key, value in their_state.items():
        assert ours_state[key].dtype == value.dtype, key
        assert torch.equal(ours_state[key], value), f"{name} {key}: initialisation differs"
    return ours, theirs


def leaf(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` that requires grad (a torch autograd leaf)."""
    return tensor.detach().clone().requires_grad_(True)
