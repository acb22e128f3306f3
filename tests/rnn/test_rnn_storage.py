"""HDF5 save and load of every rnn layer: rebuilt from the file and the installed plugins
alone, configuration kept, weights bit-exact, same outputs as before saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
from rnn_reference import DTYPES

import scidevnn
from scidevnn.module import Module
from scidevnn.storage import save_model
from scidevnn.testing import check_storage_round_trip
from scidevnn_rnn import GRU, LSTM, RNN, GRUCell, LastStep, LSTMCell, RNNCell, Tanh


def row_classifier(dtype: torch.dtype) -> Module:
    return scidevnn.Sequential(
        scidevnn.Flatten(1, -2),
        LSTM(6, 5, num_layers=2, batch_first=True, dropout=0.2, dtype=dtype),
        LastStep(),
        scidevnn.Linear(5, 3, dtype=dtype),
    )


CASES: dict[str, tuple[Any, tuple[int, ...]]] = {
    "Tanh": (lambda dtype: Tanh(), (3, 4)),
    "RNNCell": (lambda dtype: RNNCell(4, 5, nonlinearity="relu", dtype=dtype), (3, 4)),
    "LSTMCell": (lambda dtype: LSTMCell(4, 5, bias=False, dtype=dtype), (3, 4)),
    "GRUCell": (lambda dtype: GRUCell(4, 5, dtype=dtype), (3, 4)),
    "RNN": (
        lambda dtype: RNN(4, 5, 2, nonlinearity="relu", bidirectional=True, dtype=dtype),
        (6, 3, 4),
    ),
    "LSTM": (
        lambda dtype: LSTM(4, 5, 2, batch_first=True, proj_size=2, dtype=dtype),
        (3, 6, 4),
    ),
    "GRU": (lambda dtype: GRU(4, 5, 3, bias=False, dropout=0.3, dtype=dtype), (6, 3, 4)),
    "LastStep+classifier": (row_classifier, (2, 1, 7, 6)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip(case: str, dtype: torch.dtype, tmp_path: Path) -> None:
    build, shape = CASES[case]
    check_storage_round_trip(build(dtype), torch.randn(shape, dtype=dtype), tmp_path / "model.h5")


def test_file_names_rnn_types_and_torch_keys(tmp_path: Path) -> None:
    path = tmp_path / "lstm.h5"
    save_model(LSTM(3, 4, bidirectional=True), path)
    with h5py.File(path, "r") as file:
        group = file["model"]
        assert group.attrs["type"] == "LSTM"
        assert group.attrs["distribution"] == "scidevnn-rnn"
        assert "weight_hh_l0_reverse" in group
        assert group["weight_ih_l0"].shape == (16, 3)
