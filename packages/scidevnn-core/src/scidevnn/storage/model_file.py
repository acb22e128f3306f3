"""Save a model (and optionally optimizer state and training metadata) to one HDF5 file.

File layout, readable by ``h5dump`` or plain h5py::

    /                 attrs: format="scidevnn-model", format_version=1,
                             framework="scidevnn", framework_version="0.1.0"
    /model            the top layer's group (see ``layer_groups``), sub-layers nested in it
    /optimizer        optional: the optimizer's state_dict (see ``optimizer_state``)
    /metadata         optional: training information (see ``metadata``)

Loading rebuilds every layer from its registered type and JSON configuration, then fills in
the parameters and buffers: no pickle, no user code beyond the installed plugins. Every way a
file can be wrong raises a ``ModelFileError`` subclass whose message names the file and group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch

from scidevnn import plugins
from scidevnn.errors import (
    FormatVersionError,
    MalformedFileError,
    ModelFileError,
    TruncatedFileError,
)
from scidevnn.module import Module
from scidevnn.plugins import LayerInfo
from scidevnn.storage.encoding import file_error, text_of
from scidevnn.storage.files import atomic_write, open_for_reading
from scidevnn.storage.layer_groups import LayerReader, write_layer
from scidevnn.storage.metadata import read_metadata, write_metadata
from scidevnn.storage.optimizer_state import read_optimizer_state, write_optimizer_state

FORMAT_NAME = "scidevnn-model"
FORMAT_VERSION = 1


class HasStateDict(Protocol):
    """An optimizer: anything with a torch-layout ``state_dict()``."""

    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Checkpoint:
    """What a model file holds: the model, the optimizer state and the training metadata.

    ``optimizer_state`` (torch's ``state_dict`` layout) and ``optimizer_type`` (its class name)
    are ``None`` when no optimizer was saved; ``metadata`` is ``{}`` when none was.
    """

    model: Module
    optimizer_state: dict[str, Any] | None
    optimizer_type: str | None
    metadata: dict[str, Any]
    framework_version: str


def _framework_version() -> str:
    from scidevnn import __version__  # here: scidevnn/__init__ imports this module

    return __version__


def _providers() -> dict[type[Any], LayerInfo]:
    """Registered layer class -> its registry entry (the first name, if registered twice)."""
    providers: dict[type[Any], LayerInfo] = {}
    for info in plugins.get_registry().layers.values():
        providers.setdefault(info.cls, info)
    return providers


def save_model(
    model: Module,
    path: str | os.PathLike[str],
    *,
    optimizer: HasStateDict | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` (plus the optimizer's state and ``metadata`` if given) to ``path``.

    The write is atomic: a temporary file in the same directory is flushed to disk and then
    renamed over ``path``; on any error it is removed and an existing file is left untouched.
    Raises ``ModelFileError`` when the directory is missing or not writable, or when a layer
    is not registered by any plugin or has a configuration that is not JSON.
    """
    target = Path(path)
    providers = _providers()
    optimizer_state = optimizer.state_dict() if optimizer is not None else None
    with atomic_write(target) as temporary, h5py.File(temporary, "w", track_order=True) as file:
        file.attrs["format"] = FORMAT_NAME
        file.attrs["format_version"] = np.int64(FORMAT_VERSION)
        file.attrs["framework"] = "scidevnn"
        file.attrs["framework_version"] = _framework_version()
        write_layer(file, "model", model, providers, target)
        if optimizer_state is not None:
            write_optimizer_state(file, optimizer_state, type(optimizer).__name__, target)
        if metadata is not None:
            write_metadata(file, metadata, target)


def _check_format(file: h5py.File, path: Path) -> str:
    """Check the file attributes; return the framework version that wrote the file."""
    name = text_of(file.attrs.get("format"))
    if name != FORMAT_NAME:
        raise file_error(
            MalformedFileError,
            path,
            "/",
            f"an HDF5 file, but not a SciDevNN model: its attribute 'format' is {name!r}, "
            f"not '{FORMAT_NAME}'",
        )
    version = file.attrs.get("format_version")
    written_by = text_of(file.attrs.get("framework_version")) or "unknown"
    if isinstance(version, np.generic):
        version = version.item()
    if not isinstance(version, int) or version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise file_error(
            FormatVersionError,
            path,
            "/",
            f"format version {version!r} (written by scidevnn {written_by}) is not supported: "
            f"scidevnn {_framework_version()} reads format version {FORMAT_VERSION}"
            + ("; upgrade scidevnn-core" if newer else ""),
        )
    return written_by


def _read(path: Path, with_training_state: bool, device: torch.device | str | None) -> Checkpoint:
    registry = plugins.get_registry()
    reader = LayerReader(path, registry.layers, _providers())
    try:
        with open_for_reading(path) as file:
            written_by = _check_format(file, path)
            model_group = file.get("model")
            if not isinstance(model_group, h5py.Group):
                raise file_error(MalformedFileError, path, "/", "the file has no 'model' group")
            model = reader.read(model_group)
            optimizer_type = optimizer_state = None
            metadata: dict[str, Any] = {}
            if with_training_state:
                reader.group = "/optimizer"
                if isinstance(file.get("optimizer"), h5py.Group):
                    optimizer_type, optimizer_state = read_optimizer_state(file["optimizer"], path)
                reader.group = "/metadata"
                if isinstance(file.get("metadata"), h5py.Group):
                    metadata = read_metadata(file["metadata"], path)
    except ModelFileError:
        raise
    except (OSError, KeyError, RuntimeError) as exc:  # h5py's errors on damaged data
        raise file_error(
            TruncatedFileError, path, reader.group, f"the file is truncated or damaged ({exc})"
        ) from exc
    if len(reader.float_dtypes) == 1:  # non-persistent float buffers follow the datasets too
        model.to(dtype=next(iter(reader.float_dtypes)))
    if device is not None:
        model.to(device=device)
        if optimizer_state is not None:
            for values in optimizer_state["state"].values():
                for name, value in values.items():
                    if isinstance(value, torch.Tensor):
                        values[name] = value.to(device)
    return Checkpoint(model, optimizer_state, optimizer_type, metadata, written_by)


def load_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device | str | None = None
) -> Checkpoint:
    """The model, optimizer state and metadata in ``path`` (tensors on ``device``, default CPU).

    Resume training with ``optimizer.load_state_dict(checkpoint.optimizer_state)`` on an
    optimizer built over ``checkpoint.model.parameters()``.
    """
    return _read(Path(path), True, device)


def load_model(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> Module:
    """The model stored in ``path``, rebuilt from the installed plugins alone.

    Parameters take the file's dtypes (a model saved in float64 loads in float64). The model
    is in training mode, as when constructed: call ``eval()`` for inference.
    """
    return _read(Path(path), False, device).model
