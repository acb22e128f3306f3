"""HDF5 save and load of every cnn layer and of a LeNet: rebuilt from the file and the installed
plugins alone, configuration kept, weights and running statistics bit-exact, same outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from cnn_reference import DTYPES

import scidevnn
from scidevnn.module import Module
from scidevnn.testing import check_storage_round_trip
from scidevnn_cnn import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Dropout2d, MaxPool2d, ReLU


def lenet(dtype: torch.dtype) -> Module:
    return scidevnn.Sequential(
        Conv2d(1, 6, 5, padding=2, dtype=dtype), BatchNorm2d(6, dtype=dtype), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5, dtype=dtype), BatchNorm2d(16, dtype=dtype), ReLU(), MaxPool2d(2),
        scidevnn.Flatten(), scidevnn.Linear(400, 120, dtype=dtype), ReLU(),
        scidevnn.Linear(120, 84, dtype=dtype), ReLU(), scidevnn.Linear(84, 10, dtype=dtype),
    )  # fmt: skip


CASES: dict[str, tuple[Any, tuple[int, ...]]] = {
    "Conv2d": (
        lambda dtype: Conv2d(4, 6, (3, 2), stride=(2, 1), padding="valid", dilation=(1, 2),
                             groups=2, bias=False, padding_mode="zeros", dtype=dtype),
        (2, 4, 7, 8),
    ),
    "Conv2d-same-reflect": (
        lambda dtype: Conv2d(2, 3, 3, padding="same", padding_mode="reflect", dtype=dtype),
        (2, 2, 5, 5),
    ),
    "BatchNorm2d": (
        lambda dtype: BatchNorm2d(3, eps=1e-3, momentum=None, dtype=dtype),
        (4, 3, 5, 5),
    ),
    "BatchNorm2d-untracked": (
        lambda dtype: BatchNorm2d(3, affine=False, track_running_stats=False, dtype=dtype),
        (4, 3, 5, 5),
    ),
    "ReLU": (lambda dtype: ReLU(inplace=True), (2, 3)),
    "MaxPool2d": (lambda dtype: MaxPool2d((3, 2), stride=1, padding=1, dilation=(1, 2),
                                          ceil_mode=True), (2, 2, 6, 7)),
    "AvgPool2d": (lambda dtype: AvgPool2d(3, 2, 1, True, False, 4), (2, 2, 7, 7)),
    "Dropout": (lambda dtype: Dropout(0.3), (4, 5)),
    "Dropout2d": (lambda dtype: Dropout2d(0.2), (2, 3, 4, 4)),
    "LeNet": (lenet, (3, 1, 28, 28)),
}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip(case: str, dtype: torch.dtype, tmp_path: Path) -> None:
    build, shape = CASES[case]
    model = build(dtype)
    x = torch.randn(shape, dtype=dtype)
    for _ in range(2):  # training steps so the running statistics are not the initial ones
        model(x.clone())
        model.clear_saved()
    check_storage_round_trip(model, x, tmp_path / "model.h5")
