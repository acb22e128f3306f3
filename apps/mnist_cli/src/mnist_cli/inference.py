"""Classify images with a trained model, and score the predictions against labels."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mnist_cli.data import Dataset
from mnist_cli.errors import AppError
from mnist_cli.preprocess import NORMALIZATION, normalize
from scidevnn import CrossEntropyLoss, Module, Softmax, no_grad
from scidevnn.storage import load_checkpoint

NUM_CLASSES = 10


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` or ``cuda[:N]``; ``AppError`` when CUDA is asked for and torch sees no GPU."""
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError):
        raise AppError(f"unknown device '{device}': choose cpu or cuda") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise AppError(
                f"--device {device}: torch {torch.__version__} sees no CUDA GPU on this machine "
                "(a CPU-only build, or no driver); use --device cpu"
            )
        count = torch.cuda.device_count()
        if target.index is not None and target.index >= count:
            raise AppError(f"--device {device}: this machine has {count} CUDA device(s)")
    elif target.type != "cpu":
        raise AppError(f"unknown device '{device}': choose cpu or cuda")
    return target


def model_dtype(model: Module) -> torch.dtype:
    """The floating dtype of the model's first parameter (float32 when it has none)."""
    for param in model.parameters():
        return param.dtype
    return torch.float32


def predict_logits(
    model: Module,
    images: Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    normalization: tuple[float, float] = NORMALIZATION,
) -> Tensor:
    """Logits ``(N, 10)`` (on the CPU) of uint8 images ``(N, 28, 28)``, in eval mode, no_grad.

    The model is left in eval mode.
    """
    model.eval()
    dtype = model_dtype(model)
    outputs: list[Tensor] = []
    with no_grad():
        for start in range(0, int(images.shape[0]), batch_size):
            chunk = images[start : start + batch_size].to(device)
            x = normalize(chunk, normalization).to(dtype)
            outputs.append(model(x).to("cpu", torch.float32))
    if not outputs:
        return torch.empty(0, NUM_CLASSES)
    return torch.cat(outputs)


def evaluate_loss_accuracy(
    model: Module,
    images: Tensor,
    labels: Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on labelled images (eval mode, no_grad)."""
    logits = predict_logits(model, images, device=device, batch_size=batch_size)
    labels = labels.to("cpu")
    with no_grad():
        loss = float(CrossEntropyLoss()(logits, labels))
    accuracy = float((logits.argmax(1) == labels).to(torch.float64).mean())
    return loss, accuracy


def _softmax(logits: Tensor) -> Tensor:
    with no_grad():
        probabilities: Tensor = Softmax(dim=1)(logits)
    return probabilities


@dataclass(frozen=True)
class Predictions:
    """What ``infer_model`` returns: one row per image."""

    names: list[str]
    logits: Tensor
    probabilities: Tensor
    labels: Tensor | None

    @property
    def classes(self) -> Tensor:
        """Predicted class per image, int64 ``(N,)``."""
        return self.probabilities.argmax(1)

    @property
    def confidence(self) -> Tensor:
        """Probability of the predicted class, ``(N,)``."""
        return self.probabilities.max(1).values

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct predictions, or None without labels."""
        if self.labels is None or len(self.names) == 0:
            return None
        return float((self.classes == self.labels).to(torch.float64).mean())

    def __len__(self) -> int:
        return len(self.names)


def read_model(
    path: str | os.PathLike[str], device: str | torch.device | None = None
) -> tuple[Module, dict[str, Any]]:
    """The model in ``path`` (eval mode) and the metadata stored with it."""
    target = Path(path)
    if target.is_dir():
        raise AppError(f"{target}: is a folder, not a model file")
    checkpoint = load_checkpoint(target, device=device)
    return checkpoint.model.eval(), checkpoint.metadata


def normalization_of(metadata: dict[str, Any]) -> tuple[float, float]:
    """The input normalisation a model was trained with (MNIST's when not recorded)."""
    values = metadata.get("normalization")
    if (
        isinstance(values, list)
        and len(values) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        and values[1] > 0
    ):
        return float(values[0]), float(values[1])
    return NORMALIZATION


def infer_model(
    model: Module | str | os.PathLike[str],
    images: Dataset | Tensor,
    *,
    names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 500,
    normalization: tuple[float, float] | None = None,
) -> Predictions:
    """Classify digits with a model (or the path of a model file).

    ``images``: a ``Dataset`` (its labels, if any, are kept for scoring) or a uint8 tensor
    ``(N, 28, 28)``. Runs in eval mode under ``scidevnn.no_grad()``, ``batch_size`` images at
    a time; returns logits and class probabilities ``(N, 10)``. ``normalization`` (mean, std)
    defaults to the one stored in the model file, else MNIST's.
    """
    target = resolve_device(device)
    if isinstance(model, str | os.PathLike):
        model, metadata = read_model(model, device=target)
        if normalization is None:
            normalization = normalization_of(metadata)
    else:
        model.to(device=target)
    if isinstance(images, Dataset):
        data, labels = images.images, images.labels
    else:
        data, labels = images, None
    if data.dtype != torch.uint8 or data.dim() != 3 or tuple(data.shape[1:]) != (28, 28):
        raise AppError(f"images must be uint8 (N, 28, 28), got {data.dtype} {tuple(data.shape)}")
    logits = predict_logits(
        model,
        data,
        device=target,
        batch_size=batch_size,
        normalization=normalization or NORMALIZATION,
    )
    if logits.dim() != 2 or logits.shape[1] != NUM_CLASSES:
        raise AppError(
            f"the model gives outputs of shape {tuple(logits.shape)}; mnist-cli expects "
            f"(N, {NUM_CLASSES}) class scores"
        )
    row_names = list(names) if names is not None else [str(i) for i in range(len(data))]
    return Predictions(row_names, logits, _softmax(logits), labels)


@dataclass(frozen=True)
class Evaluation:
    """Scores of predictions against labels; ``confusion[true, predicted]`` counts images."""

    accuracy: float
    loss: float
    confusion: Tensor

    @property
    def support(self) -> list[int]:
        """Images per true class."""
        return [int(v) for v in self.confusion.sum(1)]

    @property
    def precision(self) -> list[float]:
        """Per class: correct / predicted as that class (0 when never predicted)."""
        predicted = self.confusion.sum(0)
        diagonal = self.confusion.diagonal()
        return [float(d) / float(p) if p else 0.0 for d, p in zip(diagonal, predicted, strict=True)]

    @property
    def recall(self) -> list[float]:
        """Per class: correct / images of that class (0 when none)."""
        actual = self.confusion.sum(1)
        diagonal = self.confusion.diagonal()
        return [float(d) / float(a) if a else 0.0 for d, a in zip(diagonal, actual, strict=True)]

    @property
    def f1(self) -> list[float]:
        """Per class: ``2 p r / (p + r)``, the harmonic mean of precision and recall (or 0)."""
        return [
            2 * p * r / (p + r) if p + r else 0.0
            for p, r in zip(self.precision, self.recall, strict=True)
        ]

    def to_json(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-able summary (what ``mnist-cli evaluate --json`` writes).

        Each class's ``name`` comes from ``class_names`` (e.g. Fashion-MNIST's), else it is the
        digit.
        """
        names = [str(c) for c in range(NUM_CLASSES)] if class_names is None else list(class_names)
        return {
            "images": int(self.confusion.sum()),
            "accuracy": self.accuracy,
            "loss": self.loss,
            "per_class": [
                {"class": c, "name": names[c], "precision": p, "recall": r, "f1": f, "support": s}
                for c, (p, r, f, s) in enumerate(
                    zip(self.precision, self.recall, self.f1, self.support, strict=True)
                )
            ],
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate_predictions(predictions: Predictions) -> Evaluation:
    """Accuracy, mean cross-entropy and the confusion matrix; needs labels."""
    labels = predictions.labels
    if labels is None:
        raise AppError("these images have no labels, so they cannot be scored")
    if len(predictions) == 0:
        raise AppError("no images to evaluate")
    predicted = predictions.classes
    confusion = torch.bincount(
        labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES * NUM_CLASSES
    ).reshape(NUM_CLASSES, NUM_CLASSES)
    with no_grad():
        loss = float(CrossEntropyLoss()(predictions.logits, labels))
    accuracy = float(confusion.diagonal().sum()) / float(confusion.sum())
    return Evaluation(accuracy, loss, confusion)
