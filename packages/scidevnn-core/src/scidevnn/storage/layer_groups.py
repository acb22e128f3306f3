"""One HDF5 group per layer: its type, configuration, parameters, buffers and sub-layers.

A layer group has the attributes ``type`` (the registry name), ``config`` (JSON of
``get_config()``), ``distribution`` and ``distribution_version`` (the plugin package that
provides the type) and ``children`` (JSON list of its sub-layer names, in order); one dataset
per own parameter and persistent buffer, named as in ``state_dict`` with the full dotted key
in its attribute ``key``; one sub-group per sub-layer (``"0"``, ``"1"``... in a Sequential).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import torch
from torch import Tensor

from scidevnn.errors import (
    DatasetMismatchError,
    MalformedFileError,
    MissingPluginError,
    ModelFileError,
)
from scidevnn.module import Module
from scidevnn.plugins import CORE_DISTRIBUTION, LayerInfo, missing_message
from scidevnn.storage.encoding import (
    file_error,
    lists_to_tuples,
    read_tensor,
    tensor_to_array,
    text_of,
    to_json,
    torch_dtype_of,
)


def write_layer(
    parent: h5py.Group,
    name: str,
    module: Module,
    providers: Mapping[type[Any], LayerInfo],
    path: Path,
    key_prefix: str = "",
) -> None:
    """Write ``module`` (and, nested, its sub-layers) as the group ``parent/name``."""
    group = parent.create_group(name, track_order=True)
    info = providers.get(type(module))
    if info is None:
        cls = type(module)
        raise file_error(
            ModelFileError,
            path,
            group.name,
            f"cannot save a {cls.__module__}.{cls.__qualname__}: no installed plugin registers "
            "that class, so the file could not be loaded back (register it in a plugin's "
            "register_layers hook)",
        )
    try:
        config = to_json(module.get_config())
    except (TypeError, ValueError) as exc:
        raise file_error(
            ModelFileError,
            path,
            group.name,
            f"cannot save {info.name}: its configuration {module.get_config()!r} is not JSON "
            f"({exc}); constructor arguments must be numbers, strings, booleans, None or "
            "lists/dicts of them",
        ) from exc
    group.attrs["type"] = info.name
    group.attrs["config"] = config
    group.attrs["distribution"] = info.distribution
    group.attrs["distribution_version"] = info.version
    group.attrs["children"] = to_json(list(module._modules))
    for local, tensor in module._own_state():
        try:
            data = tensor_to_array(tensor)
        except TypeError as exc:
            raise file_error(
                ModelFileError, path, group.name, f"cannot save {info.name}.{local}: {exc}"
            ) from exc
        dataset = group.create_dataset(local, data=data)
        dataset.attrs["key"] = key_prefix + local
    for child_name, child in module._modules.items():
        write_layer(group, child_name, child, providers, path, f"{key_prefix}{child_name}.")


@dataclass
class LayerReader:
    """Rebuilds layers from their groups; ``group`` names where reading is, for messages."""

    path: Path
    layers: Mapping[str, LayerInfo]
    providers: Mapping[type[Any], LayerInfo]
    group: str = "/"
    float_dtypes: set[torch.dtype] = field(default_factory=set)

    def error(self, cls: type[ModelFileError], group: h5py.Group, message: str) -> ModelFileError:
        return file_error(cls, self.path, group.name, message)

    def read(self, group: h5py.Group, existing: Module | None = None) -> Module:
        """The layer stored in ``group``, built from its registered type and its config.

        ``existing`` is a sub-layer that its parent's constructor already built: it is checked
        against the file's type and filled in instead.
        """
        self.group = group.name
        type_name = self._string_attr(group, "type")
        if existing is None:
            module = self._build(group, type_name)
        else:
            module = existing
            info = self.layers.get(type_name)
            if info is None or info.cls is not type(existing):
                built = self.providers.get(type(existing))
                raise self.error(
                    MalformedFileError,
                    group,
                    f"the file holds a {type_name} here, but the parent layer builds a "
                    f"{built.name if built is not None else type(existing).__name__}",
                )
        self._load_own_state(group, module, type_name)
        self._read_children(group, module, type_name)
        return module

    def _string_attr(self, group: h5py.Group, name: str) -> str:
        value = text_of(group.attrs.get(name))
        if value is None:
            raise self.error(
                MalformedFileError, group, f"the layer group has no string attribute '{name}'"
            )
        return value

    def _json_attr(self, group: h5py.Group, name: str) -> Any:
        text = self._string_attr(group, name)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self.error(
                MalformedFileError, group, f"attribute '{name}' is not valid JSON ({exc})"
            ) from exc

    def _build(self, group: h5py.Group, type_name: str) -> Module:
        info = self.layers.get(type_name)
        if info is None:
            raise self.error(MissingPluginError, group, self._missing(group, type_name))
        config = self._json_attr(group, "config")
        if not isinstance(config, dict):
            raise self.error(
                MalformedFileError,
                group,
                f"the config of {type_name} must be a JSON object, not {config!r}",
            )
        arguments = {key: lists_to_tuples(value) for key, value in config.items()}
        try:
            module = info.cls(**arguments)
        except Exception as exc:  # the plugin's constructor: any error means a bad config
            raise self.error(
                MalformedFileError,
                group,
                f"{type_name}(**{config!r}) failed: {type(exc).__name__}: {exc}",
            ) from exc
        if not isinstance(module, Module):
            raise self.error(
                MalformedFileError,
                group,
                f"the plugin registers {type_name} as a {type(module).__name__}, not a Module",
            )
        return module

    def _missing(self, group: h5py.Group, type_name: str) -> str:
        """What to install: a known provider, else the distribution that wrote the file."""
        distribution = text_of(group.attrs.get("distribution"))
        if distribution in ("", "unknown", CORE_DISTRIBUTION):
            distribution = None
        return missing_message(type_name, dict(self.layers), provider=distribution)

    def _load_own_state(self, group: h5py.Group, module: Module, type_name: str) -> None:
        """Check the datasets against the layer's parameters and buffers, then take them."""
        expected: dict[str, Tensor] = dict(module._own_state())
        found = [name for name, item in group.items() if isinstance(item, h5py.Dataset)]
        missing = [name for name in expected if name not in found]
        extra = [name for name in found if name not in expected]
        if missing or extra:
            details = ", ".join(
                part
                for part in (
                    f"missing dataset(s) {', '.join(missing)}" if missing else "",
                    f"extra dataset(s) {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise self.error(
                DatasetMismatchError,
                group,
                f"{details}: {type_name} has {list(expected) or 'no parameters'}, "
                f"the group holds {found or 'no datasets'}",
            )
        tensors: dict[str, Tensor] = {}
        for name, target in expected.items():
            tensors[name] = self._read_dataset(group, name, target, type_name)
        floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
        self.float_dtypes |= floats
        if len(floats) == 1:
            (dtype,) = floats
            if any(t.dtype != dtype for t in expected.values() if t.is_floating_point()):
                module.to(dtype=dtype)  # also converts non-persistent buffers
        for name, tensor in tensors.items():
            param = module._parameters.get(name)
            if param is not None:
                param.data = tensor
            else:
                setattr(module, name, tensor)

    def _read_dataset(self, group: h5py.Group, name: str, target: Tensor, type_name: str) -> Tensor:
        dataset = group[name]
        dtype = torch_dtype_of(dataset)
        where = f"dataset '{name}' of {type_name}"
        if dtype is None:
            raise self.error(
                DatasetMismatchError,
                group,
                f"{where} has dtype {dataset.dtype}, which is not a tensor dtype",
            )
        if tuple(dataset.shape) != tuple(target.shape):
            raise self.error(
                DatasetMismatchError,
                group,
                f"{where} has shape {tuple(dataset.shape)}, expected {tuple(target.shape)}",
            )
        same_kind = (
            dtype == target.dtype
            or (dtype.is_floating_point and target.is_floating_point())
            or (dtype.is_complex and target.is_complex())
        )
        if not same_kind:
            raise self.error(
                DatasetMismatchError,
                group,
                f"{where} has dtype {dtype}, expected {target.dtype}",
            )
        return read_tensor(dataset)

    def _read_children(self, group: h5py.Group, module: Module, type_name: str) -> None:
        listed = self._json_attr(group, "children")
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise self.error(
                MalformedFileError,
                group,
                f"attribute 'children' must be a JSON list of names, not {listed!r}",
            )
        found = [name for name, item in group.items() if isinstance(item, h5py.Group)]
        if sorted(found) != sorted(listed):
            raise self.error(
                MalformedFileError,
                group,
                f"{type_name} lists {len(listed)} sub-layer(s) {listed}, "
                f"the group holds {len(found)}: {found}",
            )
        for name in listed:
            existing = module._modules.get(name)
            child = self.read(group[name], existing)
            if existing is None:
                module.add_module(name, child)
        self.group = group.name
        unexpected = [name for name in module._modules if name not in listed]
        if unexpected:
            raise self.error(
                MalformedFileError,
                group,
                f"{type_name} builds sub-layer(s) {unexpected} that the file does not hold",
            )
