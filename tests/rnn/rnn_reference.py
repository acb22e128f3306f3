"""Helpers for the rnn tests: build a SciDevNN layer and its torch.nn namesake with the same
weights (drawn from the same seed, which also checks that the initialisation matches), and
random initial states for a sequence layer."""

from __future__ import annotations

from typing import Any

import torch

import scidevnn_rnn
from scidevnn.testing import build_pair
from scidevnn.testing import leaf as leaf

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
    return build_pair(*PAIRS[name], *args, seed=seed, **kwargs)


def initial_states(layer: Any, batch: int | None, dtype: torch.dtype) -> Any:
    """Random ``hx`` for a sequence layer: h_0 (layers*D, N, H_out), LSTM's pair (h_0, c_0);
    ``batch=None`` for unbatched input (no N dimension)."""
    lead = (layer.num_layers * layer.num_directions,) + (() if batch is None else (batch,))
    h0 = torch.randn(*lead, layer.proj_size or layer.hidden_size, dtype=dtype)
    if layer.mode == "LSTM":
        return h0, torch.randn(*lead, layer.hidden_size, dtype=dtype)
    return h0
