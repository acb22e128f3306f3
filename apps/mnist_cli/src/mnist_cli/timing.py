"""Per-layer forward and backward times of one training step, like Caffe's ``caffe time``.

Each iteration runs the model layer by layer (timing each forward), the loss, then the
backward passes in reverse order (timing each), then one optimizer step. Totals are the sums
of the rows shown, so they add up; the end-to-end wall time of an iteration is reported next
to them, with the difference (Python overhead between the timers) named as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mnist_cli.data import load_embedded
from mnist_cli.preprocess import normalize
from mnist_cli.training import make_optimizer
from scidevnn import CrossEntropyLoss, Module, Sequential


@dataclass(frozen=True)
class LayerTime:
    """Mean milliseconds of one layer's forward and backward over the timed iterations."""

    name: str
    type: str
    output_shape: str
    forward_ms: float
    backward_ms: float

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass(frozen=True)
class TimingReport:
    """Rows (layers, then the loss), the optimizer step, and the measured iteration time."""

    rows: list[LayerTime]
    optimizer_ms: float
    iteration_ms: float
    batch_size: int
    iterations: int

    @property
    def forward_ms(self) -> float:
        return sum(row.forward_ms for row in self.rows)

    @property
    def backward_ms(self) -> float:
        return sum(row.backward_ms for row in self.rows)

    @property
    def timed_ms(self) -> float:
        """Everything the per-row timers and the optimizer timer covered."""
        return self.forward_ms + self.backward_ms + self.optimizer_ms


def shape_text(value: Any) -> str:
    """``(64, 6, 28, 28)``, or nested for tuple outputs such as an LSTM's."""
    if isinstance(value, torch.Tensor):
        return "(" + ", ".join(str(d) for d in value.shape) + ")"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(shape_text(v) for v in value) + ")"
    return type(value).__name__


def leaf_layers(model: Module, prefix: str = "") -> list[tuple[str, Module]]:
    """The layers data flows through in order: a Sequential's children, recursively."""
    if isinstance(model, Sequential):
        layers: list[tuple[str, Module]] = []
        for name, child in model.named_children():
            layers += leaf_layers(child, f"{prefix}.{name}" if prefix else name)
        return layers
    return [(prefix or type(model).__name__, model)]


def time_model(
    model: Module,
    *,
    batch_size: int = 64,
    iterations: int = 20,
    warmup: int = 3,
    optimizer: str = "adam",
    device: torch.device | str = "cpu",
) -> TimingReport:
    """Time ``iterations`` training steps (after ``warmup`` untimed ones) on real digits."""
    target = torch.device(device)
    model.to(device=target).train()
    layers = leaf_layers(model)
    criterion = CrossEntropyLoss()
    opt = make_optimizer(optimizer, model, 1e-4)
    sample = load_embedded("train")
    assert sample.labels is not None
    repeats = -(-batch_size // len(sample))
    x = normalize(sample.images.repeat(repeats, 1, 1)[:batch_size]).to(target)
    y = sample.labels.repeat(repeats)[:batch_size].to(target)
    if layers:
        layers[0][1].needs_input_grad = False

    sync: Callable[[], None] = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
    forward = [0.0] * (len(layers) + 1)
    backward = [0.0] * (len(layers) + 1)
    shapes = [""] * (len(layers) + 1)
    optimizer_s = iteration_s = 0.0
    for iteration in range(warmup + iterations):
        timed = iteration >= warmup
        opt.zero_grad()
        sync()
        start = time.perf_counter()
        out: Any = x
        for i, (_, layer) in enumerate(layers):
            t0 = time.perf_counter()
            out = layer(out)
            sync()
            if timed:
                forward[i] += time.perf_counter() - t0
            shapes[i] = shape_text(out)
        t0 = time.perf_counter()
        loss = criterion(out, y)
        sync()
        t1 = time.perf_counter()
        grad: Any = criterion.backward()
        sync()
        t2 = time.perf_counter()
        if timed:
            forward[-1] += t1 - t0
            backward[-1] += t2 - t1
        shapes[-1] = shape_text(loss)
        for i in range(len(layers) - 1, -1, -1):
            t0 = time.perf_counter()
            grad = layers[i][1].backward(grad)
            sync()
            if timed:
                backward[i] += time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.step()
        sync()
        end = time.perf_counter()
        if timed:
            optimizer_s += end - t0
            iteration_s += end - start

    scale = 1000.0 / max(iterations, 1)
    rows = [
        LayerTime(name, type(layer).__name__, shapes[i], forward[i] * scale, backward[i] * scale)
        for i, (name, layer) in enumerate(layers)
    ]
    rows.append(
        LayerTime(
            "loss", type(criterion).__name__, shapes[-1], forward[-1] * scale, backward[-1] * scale
        )
    )
    return TimingReport(rows, optimizer_s * scale, iteration_s * scale, batch_size, iterations)
