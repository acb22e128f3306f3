"""What a model file holds, read back: layers, output shapes, parameters, providers, training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import torch

from mnist_cli.errors import AppError
from mnist_cli.inference import model_dtype
from mnist_cli.timing import leaf_layers, shape_text
from scidevnn import Module, no_grad
from scidevnn.plugins import get_registry
from scidevnn.storage import load_checkpoint


@dataclass(frozen=True)
class LayerRow:
    """One layer as ``mnist-cli inspect`` lists it."""

    name: str
    type: str
    output_shape: str
    parameters: int
    package: str
    version: str
    installed_version: str | None


@dataclass(frozen=True)
class ModelReport:
    """A model file's contents, for display."""

    path: Path
    format_version: str
    framework_version: str
    layers: list[LayerRow]
    optimizer_type: str | None
    metadata: dict[str, Any]

    @property
    def parameters(self) -> int:
        return sum(row.parameters for row in self.layers)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "item"):
        return str(value.item())
    return str(value) if value is not None else "unknown"


def _output_shapes(model: Module, layers: list[tuple[str, Module]]) -> list[str]:
    """Shapes after each layer for one dummy image ``(1, 1, 28, 28)`` ("?" after a failure)."""
    shapes: list[str] = []
    model.eval()
    value: Any = torch.zeros(1, 1, 28, 28, dtype=model_dtype(model))
    with no_grad():
        for _, layer in layers:
            try:
                value = layer(value)
            except Exception:  # a model built for other inputs: show what is known
                break
            shapes.append(shape_text(value))
    return shapes + ["?"] * (len(layers) - len(shapes))


def inspect_model_file(path: Path) -> ModelReport:
    """Load ``path`` (errors as ``ModelFileError``) and describe every layer in it."""
    if path.is_dir():
        raise AppError(f"{path}: is a folder, not a model file")
    checkpoint = load_checkpoint(path)
    model = checkpoint.model
    layers = leaf_layers(model)
    shapes = _output_shapes(model, layers)
    registry = get_registry().layers
    rows: list[LayerRow] = []
    with h5py.File(path, "r") as file:
        format_version = _text(file.attrs.get("format_version"))
        framework_version = _text(file.attrs.get("framework_version"))
        for (name, layer), shape in zip(layers, shapes, strict=True):
            group_name = (
                "model" if name == type(model).__name__ else "model/" + name.replace(".", "/")
            )
            group = file.get(group_name)
            attrs = group.attrs if isinstance(group, h5py.Group) else {}
            type_name = _text(attrs.get("type", type(layer).__name__))
            info = registry.get(type_name)
            rows.append(
                LayerRow(
                    name=name,
                    type=type_name,
                    output_shape=shape,
                    parameters=sum(p.numel() for p in layer.parameters()),
                    package=_text(attrs.get("distribution", info.distribution if info else None)),
                    version=_text(
                        attrs.get("distribution_version", info.version if info else None)
                    ),
                    installed_version=info.version if info else None,
                )
            )
    return ModelReport(
        path,
        format_version,
        framework_version,
        rows,
        checkpoint.optimizer_type,
        checkpoint.metadata,
    )
