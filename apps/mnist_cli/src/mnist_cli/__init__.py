"""mnist-cli: train and run SciDevNN networks on MNIST-format digits.

The command line (``mnist-cli``) is in ``mnist_cli.cli``; the same work from Python::

    from mnist_cli import train_model, load_model, infer_model, save_model

    result = train_model("cnn", epochs=2, out="cnn.h5")   # TrainResult
    model = load_model("cnn.h5")                           # scidevnn Module, eval mode
    predictions = infer_model(model, images)               # uint8 (N, 28, 28) or a Dataset
    save_model(model, "copy.h5")
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mnist_cli.errors import AppError, TrainingDivergedError, TrainingInterrupted
from mnist_cli.files import check_output_path
from mnist_cli.inference import Evaluation, Predictions, evaluate_predictions, infer_model
from mnist_cli.training import TrainResult, train_model
from mnist_cli.version import APP_VERSION
from scidevnn import Module
from scidevnn.storage import load_model as _load_model
from scidevnn.storage import save_model as _save_model

__version__ = APP_VERSION


def save_model(
    model: Module,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` (and optional JSON-able ``metadata``) to the HDF5 file ``path``.

    The write is atomic; ``AppError`` when the folder is missing or not writable.
    """
    from pathlib import Path

    _save_model(model, check_output_path(Path(path), "model file"), metadata=metadata)


def load_model(path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Module:
    """The model stored in ``path``, rebuilt from the installed plugins, in eval mode."""
    return _load_model(path, device=device).eval()


__all__ = [
    "AppError",
    "Evaluation",
    "Predictions",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "__version__",
    "evaluate_predictions",
    "infer_model",
    "load_model",
    "save_model",
    "train_model",
]
