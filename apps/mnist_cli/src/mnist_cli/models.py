"""The networks ``mnist-cli`` trains, each a short declarative list of registry layers.

A model is a ``Sequential`` of layers looked up by name in the plugin registry
(``scidevnn.plugins.get_layer``) and built from their constructor arguments, so the same spec
works with whatever plugin provides each layer, and a missing plugin is named in the error.
Every model takes images ``(N, 1, 28, 28)`` (normalised, see ``training.normalize``) and
returns logits ``(N, 10)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from mnist_cli.errors import AppError
from scidevnn import Module, Sequential
from scidevnn.errors import UnknownLayerError
from scidevnn.plugins import KNOWN_PROVIDERS, get_layer

ModelName: TypeAlias = Literal["mlp", "cnn", "lstm"]
OptimizerName: TypeAlias = Literal["sgd", "adam", "adamw"]

#: One layer: its registry name and its constructor arguments.
LayerSpec: TypeAlias = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class ModelSpec:
    """A model's layers and the training defaults that suit it on MNIST-size data."""

    name: str
    description: str
    layers: tuple[LayerSpec, ...]
    epochs: int
    batch_size: int = 64


def _linear(inputs: int, outputs: int) -> LayerSpec:
    return ("Linear", {"in_features": inputs, "out_features": outputs})


MLP = ModelSpec(
    name="mlp",
    description="multilayer perceptron 784-256-10 with ReLU",
    layers=(("Flatten", {}), _linear(784, 256), ("ReLU", {}), _linear(256, 10)),
    epochs=10,
)

CNN = ModelSpec(
    name="cnn",
    description="LeNet-5 with batch normalisation",
    layers=(
        ("Conv2d", {"in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2}),
        ("BatchNorm2d", {"num_features": 6}),
        ("ReLU", {}),
        ("MaxPool2d", {"kernel_size": 2}),
        ("Conv2d", {"in_channels": 6, "out_channels": 16, "kernel_size": 5}),
        ("BatchNorm2d", {"num_features": 16}),
        ("ReLU", {}),
        ("MaxPool2d", {"kernel_size": 2}),
        ("Flatten", {}),
        _linear(400, 120),
        ("ReLU", {}),
        _linear(120, 84),
        ("ReLU", {}),
        _linear(84, 10),
    ),
    epochs=15,
)

LSTM = ModelSpec(
    name="lstm",
    description="LSTM(28, 128) reading the image row by row, then linear 128-10",
    layers=(
        # (N, 1, 28, 28) -> (N, 28, 28): 28 time steps of 28 pixels
        ("Flatten", {"start_dim": 1, "end_dim": 2}),
        ("LSTM", {"input_size": 28, "hidden_size": 128, "batch_first": True}),
        ("LastStep", {}),
        _linear(128, 10),
    ),
    epochs=15,
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (MLP, CNN, LSTM)}

#: Learning rate per optimizer when neither the user nor the model spec gives one.
DEFAULT_LR: dict[str, float] = {"adam": 2e-3, "adamw": 2e-3, "sgd": 0.05}


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name``; ``AppError`` listing the choices otherwise."""
    spec = MODELS.get(name)
    if spec is None:
        raise AppError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    return spec


def build_model(name: str) -> Sequential:
    """A freshly initialised model (weights from torch's global RNG: seed it first)."""
    spec = get_spec(name)
    layers: list[Module] = []
    for layer_name, config in spec.layers:
        try:
            cls = get_layer(layer_name)
        except UnknownLayerError as exc:
            provider = KNOWN_PROVIDERS.get(layer_name)
            hint = (
                f"it needs {layer_name} from the plugin package {provider}, which is not "
                f"installed (pip install {provider})"
                if provider
                else str(exc)
            )
            raise AppError(f"cannot build the {name} model: {hint}") from None
        layers.append(cls(**config))
    sequential_cls = get_layer("Sequential")
    model: Sequential = sequential_cls(*layers)
    return model
