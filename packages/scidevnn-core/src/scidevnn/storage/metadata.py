"""The ``metadata`` group: a JSON-able dict of training information (epochs, losses, ...).

One dataset per key, so nothing large ever sits in an HDF5 attribute (64 KiB limit): a list of
ints or of floats becomes an int64 or float64 array (readable as numbers by any HDF5 tool),
anything else a UTF-8 string dataset holding its JSON. The attribute ``encoding`` of each
dataset (``int-list``, ``float-list`` or ``json``) says which. Tuples come back as lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from scidevnn.errors import MalformedFileError, ModelFileError
from scidevnn.storage.encoding import STRING_DTYPE, file_error, text_of, to_json

_INT64 = np.iinfo(np.int64)


def _encode(value: Any) -> tuple[str, Any]:
    """(encoding, data) for one metadata value; ``TypeError`` when not JSON."""
    if isinstance(value, list | tuple) and value:
        if (
            all(type(item) is int for item in value)
            and _INT64.min <= min(value)
            and max(value) <= _INT64.max
        ):
            return "int-list", np.asarray(value, dtype=np.int64)
        if all(type(item) is float for item in value):
            return "float-list", np.asarray(value, dtype=np.float64)
    return "json", to_json(value)


def write_metadata(root: h5py.Group, metadata: Mapping[str, Any], path: Path) -> None:
    """Write ``metadata`` (string keys without '/', JSON-able values) as ``/metadata``."""
    group = root.create_group("metadata", track_order=True)
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise file_error(
                ModelFileError,
                path,
                group.name,
                f"metadata key {key!r} is not a usable name (a non-empty string without '/')",
            )
        try:
            encoding, data = _encode(value)
        except (TypeError, ValueError) as exc:
            raise file_error(
                ModelFileError, path, group.name, f"metadata '{key}' is not JSON ({exc})"
            ) from exc
        dataset = group.create_dataset(
            key, data=data, dtype=STRING_DTYPE if encoding == "json" else None
        )
        dataset.attrs["encoding"] = encoding


def read_metadata(group: h5py.Group, path: Path) -> dict[str, Any]:
    """The dict ``write_metadata`` stored."""
    metadata: dict[str, Any] = {}
    for key, dataset in group.items():
        encoding = text_of(dataset.attrs.get("encoding"))
        if isinstance(dataset, h5py.Dataset) and encoding in ("int-list", "float-list"):
            metadata[key] = np.asarray(dataset[()]).tolist()
            continue
        text = text_of(dataset[()]) if isinstance(dataset, h5py.Dataset) else None
        try:
            if encoding != "json" or text is None:
                raise ValueError("not a JSON string dataset")
            metadata[key] = json.loads(text)
        except ValueError as exc:
            raise file_error(
                MalformedFileError,
                path,
                group.name,
                f"metadata '{key}' cannot be read ({exc})",
            ) from exc
    return metadata
