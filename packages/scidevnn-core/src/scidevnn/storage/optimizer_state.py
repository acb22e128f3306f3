"""The ``optimizer`` group: an optimizer's ``state_dict()`` in torch's layout, for resuming.

Layout: attribute ``type`` (the optimizer class name); a JSON string dataset ``param_groups``
(hyperparameters and the parameter indices of each group); a group ``state`` with one
sub-group per parameter index holding one dataset per state tensor (``exp_avg``, ...) and an
attribute ``scalars``, JSON of the state's plain numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
from torch import Tensor

from scidevnn.errors import MalformedFileError, ModelFileError
from scidevnn.storage.encoding import (
    STRING_DTYPE,
    file_error,
    lists_to_tuples,
    read_tensor,
    tensor_to_array,
    text_of,
    to_json,
    torch_dtype_of,
)

#: Param-group entries that stay lists (everything else list-valued was a tuple, as betas).
_LIST_KEYS = ("params", "param_names")


def write_optimizer_state(
    root: h5py.Group, state_dict: Mapping[str, Any], type_name: str, path: Path
) -> None:
    """Write ``state_dict`` (``{'state': {index: {...}}, 'param_groups': [...]}``)."""
    group = root.create_group("optimizer", track_order=True)
    state = state_dict.get("state")
    param_groups = state_dict.get("param_groups")
    if not isinstance(state, Mapping) or not isinstance(param_groups, list):
        raise file_error(
            ModelFileError,
            path,
            group.name,
            "the optimizer's state_dict() must hold 'state' (a dict) and 'param_groups' (a list)",
        )
    group.attrs["type"] = type_name
    try:
        groups_json = to_json(param_groups)
    except (TypeError, ValueError) as exc:
        raise file_error(
            ModelFileError, path, group.name, f"param_groups are not JSON ({exc})"
        ) from exc
    group.create_dataset("param_groups", data=groups_json, dtype=STRING_DTYPE)
    states = group.create_group("state", track_order=True)
    for index, values in state.items():
        entry = states.create_group(str(index), track_order=True)
        scalars: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, Tensor):
                try:
                    entry.create_dataset(name, data=tensor_to_array(value))
                except TypeError as exc:
                    raise file_error(
                        ModelFileError, path, entry.name, f"state '{name}': {exc}"
                    ) from exc
            else:
                scalars[name] = value
        try:
            entry.attrs["scalars"] = to_json(scalars)
        except (TypeError, ValueError) as exc:
            raise file_error(
                ModelFileError, path, entry.name, f"state values are not JSON ({exc})"
            ) from exc


def read_optimizer_state(group: h5py.Group, path: Path) -> tuple[str, dict[str, Any]]:
    """(optimizer class name, state dict in torch's layout) from the ``optimizer`` group."""

    def malformed(where: h5py.Group, message: str) -> ModelFileError:
        return file_error(MalformedFileError, path, where.name, message)

    type_name = text_of(group.attrs.get("type"))
    if type_name is None:
        raise malformed(group, "the optimizer group has no string attribute 'type'")
    if not isinstance(group.get("param_groups"), h5py.Dataset) or not isinstance(
        group.get("state"), h5py.Group
    ):
        raise malformed(
            group, "the optimizer group needs a 'param_groups' dataset and a 'state' group"
        )
    text = text_of(group["param_groups"][()])
    try:
        param_groups = json.loads(text) if text is not None else None
    except ValueError:
        param_groups = None
    if not isinstance(param_groups, list) or not all(isinstance(g, dict) for g in param_groups):
        raise malformed(group, "'param_groups' must be a JSON list of objects")
    param_groups = [
        {k: v if k in _LIST_KEYS else lists_to_tuples(v) for k, v in g.items()}
        for g in param_groups
    ]
    state: dict[Any, dict[str, Any]] = {}
    for key, entry in group["state"].items():
        if not isinstance(entry, h5py.Group):
            raise malformed(group["state"], f"'{key}' should be a group of one parameter's state")
        scalars_text = text_of(entry.attrs.get("scalars"))
        try:
            values = json.loads(scalars_text) if scalars_text is not None else None
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise malformed(entry, "attribute 'scalars' must be a JSON object")
        for name, dataset in entry.items():
            if not isinstance(dataset, h5py.Dataset) or torch_dtype_of(dataset) is None:
                raise malformed(entry, f"'{name}' is not a tensor dataset")
            values[name] = read_tensor(dataset)
        state[int(key) if key.isdigit() else key] = values
    return type_name, {"state": state, "param_groups": param_groups}
