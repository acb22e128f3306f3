"""Training checkpoints: the model file plus everything needed to continue training exactly.

A checkpoint is an ordinary SciDevNN model file (``scidevnn.storage``) whose optimizer group
holds the optimizer's state and whose metadata holds, as JSON-able values:

``app``, ``app_version``: who wrote it; ``model_name``: ``mlp``/``cnn``/``lstm``;
``train_config``: the ``TrainConfig``, including ``plot``, where the curves go (a resumed run
keeps drawing them there unless given another ``plot``); ``epoch``: completed epochs; ``step``:
batches already run in the next epoch (non-zero only after Ctrl-C); ``partial``: that epoch's
running sums; ``history``: one dict per finished epoch; ``rng_state``: torch's CPU generator
state (bytes as ints); ``normalization``: input ``[mean, std]``; ``test_loss``/``test_accuracy``
once training finished; ``finished``: whether the configured epochs are done.

The metrics file is not recorded: it always sits beside the model file, named after it
(``model.h5`` -> ``model.metrics.jsonl``), and every epoch rewrites it with the whole history,
so a resumed run continues it wherever the model file goes.

Shuffling uses a generator seeded from (seed, epoch), never the global one, so where training
stops and restarts does not change the batches it sees.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mnist_cli.errors import AppError
from mnist_cli.version import APP_VERSION
from scidevnn import Module
from scidevnn.storage import Checkpoint, load_checkpoint, save_model


@dataclass(frozen=True)
class TrainConfig:
    """What defines a training run; saved in every checkpoint and kept when resuming."""

    model: str = "mlp"
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    lr_decay: float = 0.8
    seed: int = 0
    val_split: float = 0.0
    limit: int | None = None
    #: Absolute path of the loss and accuracy curves' PNG, redrawn after every epoch (None: none).
    plot: str | None = None

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch``: ``lr * lr_decay ** (epoch - 1)``.

        It depends on the epoch alone (not on the total), so a run resumed with more epochs
        follows the same schedule as one that planned them from the start.
        """
        return self.lr * self.lr_decay ** (epoch - 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: Path) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AppError(
                f"{path}: the checkpoint's training configuration has keys this mnist-cli "
                f"does not know ({', '.join(unknown)}): it was written by a newer version"
            )
        return cls(**values)


@dataclass
class PartialEpoch:
    """Running sums of the epoch in progress (restored when resuming mid-epoch)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class TrainingState:
    """Where training stands: finished epochs, position in the next one, and history."""

    epoch: int = 0
    step: int = 0
    partial: PartialEpoch = field(default_factory=PartialEpoch)
    history: list[dict[str, Any]] = field(default_factory=list)
    test_loss: float | None = None
    test_accuracy: float | None = None
    finished: bool = False


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back: the model, optimizer state, configuration and progress."""

    model: Module
    optimizer_state: dict[str, Any]
    optimizer_type: str | None
    config: TrainConfig
    state: TrainingState
    rng_state: torch.Tensor | None


def checkpoint_metadata(
    config: TrainConfig, state: TrainingState, normalization: tuple[float, float]
) -> dict[str, Any]:
    """The metadata dict stored with the model (see the module docstring)."""
    return {
        "app": "mnist-cli",
        "app_version": APP_VERSION,
        "model_name": config.model,
        "train_config": asdict(config),
        "epoch": state.epoch,
        "step": state.step,
        "partial": asdict(state.partial),
        "history": state.history,
        "rng_state": torch.get_rng_state().tolist(),
        "normalization": [float(normalization[0]), float(normalization[1])],
        "test_loss": state.test_loss,
        "test_accuracy": state.test_accuracy,
        "finished": state.finished,
    }


def save_checkpoint(
    path: Path,
    model: Module,
    optimizer: Any,
    config: TrainConfig,
    state: TrainingState,
    normalization: tuple[float, float],
) -> None:
    """Write model, optimizer state and training state to ``path`` in one atomic step."""
    save_model(
        model,
        path,
        optimizer=optimizer,
        metadata=checkpoint_metadata(config, state, normalization),
    )


def read_checkpoint(path: Path, device: str | None = None) -> LoadedCheckpoint:
    """Load a checkpoint written by ``save_checkpoint``; ``AppError`` when it is not one."""
    if not path.exists():
        raise AppError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise AppError(f"{path}: is a folder, not a checkpoint file")
    loaded: Checkpoint = load_checkpoint(os.fspath(path), device=device)
    metadata = loaded.metadata
    if "train_config" not in metadata or loaded.optimizer_state is None:
        raise AppError(
            f"{path}: holds a model but no training state (no optimizer state or training "
            "configuration), so training cannot resume from it"
        )
    try:
        config = TrainConfig.from_dict(dict(metadata["train_config"]), path)
        partial = PartialEpoch(**metadata.get("partial", {}))
        state = TrainingState(
            epoch=int(metadata["epoch"]),
            step=int(metadata.get("step", 0)),
            partial=partial,
            history=list(metadata.get("history", [])),
            test_loss=metadata.get("test_loss"),
            test_accuracy=metadata.get("test_accuracy"),
            finished=bool(metadata.get("finished", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AppError(f"{path}: the training state in the checkpoint is damaged ({exc})") from None
    rng = metadata.get("rng_state")
    rng_state = torch.tensor(rng, dtype=torch.uint8) if isinstance(rng, list) and rng else None
    return LoadedCheckpoint(
        loaded.model, loaded.optimizer_state, loaded.optimizer_type, config, state, rng_state
    )
