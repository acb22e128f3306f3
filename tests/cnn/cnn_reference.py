"""Helpers for the cnn tests: a SciDevNN layer and its torch.nn namesake with the same weights
(drawn from the same seed, which also checks that the initialisation matches torch's)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import scidevnn_cnn
from scidevnn.testing import build_pair
from scidevnn.testing import leaf as leaf

DTYPES = [torch.float32, torch.float64]

PAIRS: dict[str, tuple[type[Any], type[torch.nn.Module]]] = {
    "Conv2d": (scidevnn_cnn.Conv2d, torch.nn.Conv2d),
    "BatchNorm2d": (scidevnn_cnn.BatchNorm2d, torch.nn.BatchNorm2d),
    "ReLU": (scidevnn_cnn.ReLU, torch.nn.ReLU),
    "MaxPool2d": (scidevnn_cnn.MaxPool2d, torch.nn.MaxPool2d),
    "AvgPool2d": (scidevnn_cnn.AvgPool2d, torch.nn.AvgPool2d),
    "Dropout": (scidevnn_cnn.Dropout, torch.nn.Dropout),
    "Dropout2d": (scidevnn_cnn.Dropout2d, torch.nn.Dropout2d),
}


def make_pair(name: str, *args: Any, seed: int = 0, **kwargs: Any) -> tuple[Any, torch.nn.Module]:
    """(ours, torch's) built from the same seed; asserts their state dicts are identical."""
    return build_pair(*PAIRS[name], *args, seed=seed, **kwargs)


def tolerance(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def assert_close(
    actual: Tensor | None, expected: Tensor | None, what: str, dtype: torch.dtype
) -> None:
    assert actual is not None and expected is not None, what
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = tolerance(dtype)
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")
