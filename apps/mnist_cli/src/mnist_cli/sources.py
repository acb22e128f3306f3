"""The data ``infer`` and ``evaluate`` read when none is named, and what its classes are called.

A model file written by ``mnist-cli train`` records the data it was trained on (``dataset`` and
``data_dir`` in its ``train_config``). Given no ``--data``/``--dataset``, the commands read the
test images of that data, so a Fashion-MNIST model is scored on Fashion-MNIST, not on digits;
a recorded folder that no longer exists is an error asking for ``--data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mnist_cli.data import Dataset, resolve
from mnist_cli.data.datasets import DatasetName
from mnist_cli.errors import AppError

#: Fashion-MNIST's ten classes, by label.
FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_NAMED: tuple[str, ...] = ("embedded", "mnist", "fashion")
_DESCRIPTIONS: dict[str, str] = {
    "embedded": "the embedded MNIST sample",
    "mnist": "MNIST (--dataset mnist)",
    "fashion": "Fashion-MNIST (--dataset fashion)",
}


@dataclass(frozen=True)
class TrainingData:
    """The data a model file says it was trained on.

    ``data_dir`` set: that folder (``dataset`` says what it holds, when named too); otherwise
    the named ``dataset`` (None: the embedded sample, the default).
    """

    dataset: DatasetName | None
    data_dir: Path | None

    def describe(self) -> str:
        """``the folder /x/y``, ``Fashion-MNIST (--dataset fashion)``, ..."""
        if self.data_dir is not None:
            kind = {"mnist": "MNIST ", "fashion": "Fashion-MNIST "}.get(self.dataset or "", "")
            return f"the {kind}folder {self.data_dir}"
        return _DESCRIPTIONS[self.dataset or "embedded"]


def recorded_data(metadata: Mapping[str, Any]) -> TrainingData | None:
    """The training data recorded in a model file's metadata; None when there is no record."""
    config = metadata.get("train_config")
    if not isinstance(config, Mapping):
        return None
    dataset, data_dir = config.get("dataset"), config.get("data_dir")
    if (dataset is not None and dataset not in _NAMED) or not isinstance(data_dir, str | None):
        return None
    return TrainingData(cast(DatasetName | None, dataset), Path(data_dir) if data_dir else None)


def load_recorded(model: Path, recorded: TrainingData, *, require_labels: bool) -> Dataset:
    """The test split of the data ``model`` was trained on."""
    if recorded.data_dir is not None:
        if not recorded.data_dir.is_dir():
            raise AppError(
                f"{model} was trained on the folder {recorded.data_dir}, which no longer "
                "exists: give the test data with --data DIR (or --dataset)"
            )
        named = recorded.dataset if recorded.dataset != "embedded" else None
        return resolve(named, recorded.data_dir, False, "test", require_labels=require_labels)
    return resolve(recorded.dataset, None, False, "test", require_labels=require_labels)


def recorded_note(model: Path, recorded: TrainingData) -> str:
    """The line saying which data a command reads in place of --data/--dataset."""
    return (
        f"no --data or --dataset given: using {recorded.describe()}, the data {model} was "
        "trained on"
    )


def class_names(dataset: str | None, recorded: TrainingData | None) -> tuple[str, ...] | None:
    """Fashion-MNIST's class names when the data is Fashion-MNIST, else None (digits).

    ``dataset`` is the ``--dataset`` given; without one, the model's recorded training data
    decides (its classes are the ones the model predicts).
    """
    if dataset is None and recorded is not None:
        dataset = recorded.dataset
    return FASHION_CLASSES if dataset == "fashion" else None
