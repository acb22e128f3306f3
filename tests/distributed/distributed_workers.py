"""Worker functions for the distributed tests (spawned processes import them by module name).

Each worker trains a replica on its shard and saves its final state with ``torch.save`` so the
test can compare every replica with a single process trained on the same global batches.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import scidevnn
from scidevnn import distributed as sdist
from scidevnn.plugins import get_layer

FEATURES, CLASSES, SAMPLES = 12, 5, 96


def make_data(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=generator, dtype=dtype)
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    return x, y


def build_mlp(seed: int, dtype: torch.dtype) -> scidevnn.Module:
    torch.manual_seed(seed)
    model = scidevnn.Sequential(
        scidevnn.Linear(FEATURES, 32),
        scidevnn.Sigmoid(),
        scidevnn.Sequential(scidevnn.Linear(32, 16), scidevnn.Sigmoid()),
        scidevnn.Linear(16, CLASSES),
    )
    model.needs_input_grad = False
    return model.to(dtype=dtype)


def global_batches(world_size: int, global_batch: int, epochs: int) -> list[list[Tensor]]:
    """For each step, the index tensor of each rank (the global batch is their union)."""
    local = global_batch // world_size
    steps: list[list[Tensor]] = []
    for epoch in range(epochs):
        shards = []
        for rank in range(world_size):
            sampler = sdist.DistributedSampler(SAMPLES, world_size, rank, seed=7)
            sampler.set_epoch(epoch)
            shards.append(sampler.indices())
        for start in range(0, len(shards[0]) - local + 1, local):
            steps.append([shard[start : start + local] for shard in shards])
    return steps


def train(
    model: scidevnn.Module,
    batches: list[Tensor],
    data: tuple[Tensor, Tensor],
    accumulate: Callable[[], AbstractContextManager[None]] | None = None,
    lr: float = 0.5,
) -> None:
    """SGD with momentum on cross-entropy; ``accumulate`` wraps the first half-batch backward."""
    x, y = data
    loss_fn = scidevnn.CrossEntropyLoss()
    optimizer = scidevnn.SGD(model.parameters(), lr=lr, momentum=0.9)
    for index in batches:
        optimizer.zero_grad()
        if accumulate is None:
            loss_fn(model(x[index]), y[index])
            model.backward(loss_fn.backward())
        else:  # two micro-batches: the first one's gradient stays local
            halves = index.chunk(2)
            with accumulate():
                loss_fn(model(x[halves[0]]), y[halves[0]])
                model.backward(half(loss_fn.backward()))
            loss_fn(model(x[halves[1]]), y[halves[1]])
            model.backward(half(loss_fn.backward()))
        optimizer.step()


def half(grad: Tensor | None) -> Tensor:
    assert grad is not None
    return grad * 0.5


def reference_mlp(
    world_size: int, global_batch: int, epochs: int, dtype: torch.dtype
) -> dict[str, Tensor]:
    """One process, global batches made of every rank's share of the step; rank 0's start."""
    model = build_mlp(100, dtype)
    batches = [torch.cat(parts) for parts in global_batches(world_size, global_batch, epochs)]
    train(model, batches, make_data(dtype))
    return dict(model.state_dict())


def mlp_worker(out_dir: str, global_batch: int, epochs: int) -> tuple[int, int]:
    """Train replicas (built from different seeds) three ways per dtype; save each final state.

    Returns (rank, world size) as seen by the worker whose result ``spawn`` hands back.
    """
    rank, world_size = sdist.get_rank(), sdist.get_world_size()
    batches = [parts[rank] for parts in global_batches(world_size, global_batch, epochs)]
    for dtype in (torch.float32, torch.float64):
        for variant, cap in (("default", 25.0), ("small-buckets", 0.0005)):
            model = sdist.DistributedDataParallel(build_mlp(100 + rank, dtype), bucket_cap_mb=cap)
            events: list[str] = []
            if variant == "small-buckets":
                assert len(model._buckets.buckets) >= 3
                log_overlap(model, events)
            train(model, batches, make_data(dtype))
            if variant == "small-buckets":  # communication started before the backward ended
                assert events.index("all-reduce") < events.index("first layer backward")
            torch.save(
                model.module.state_dict(), Path(out_dir) / f"mlp-{dtype}-{variant}-{rank}.pt"
            )
        model = sdist.DistributedDataParallel(build_mlp(100 + rank, dtype))
        train(model, batches, make_data(dtype), accumulate=model.no_sync)
        torch.save(model.module.state_dict(), Path(out_dir) / f"mlp-{dtype}-no_sync-{rank}.pt")
    return rank, world_size


def make_images(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 1, 8, 8, generator=generator, dtype=dtype) * 2 + 1
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    return x, y


def build_cnn(seed: int, dtype: torch.dtype) -> scidevnn.Module:
    """conv 1->4 3x3 pad 1, BatchNorm2d, ReLU, max-pool 2, flatten, linear 64->5."""
    torch.manual_seed(seed)
    layer = get_layer
    model = scidevnn.Sequential(
        layer("Conv2d")(1, 4, 3, padding=1),
        layer("BatchNorm2d")(4),
        layer("ReLU")(),
        layer("MaxPool2d")(2),
        layer("Flatten")(),
        scidevnn.Linear(64, CLASSES),
    )
    model.needs_input_grad = False
    return model.to(dtype=dtype)


#: Gentler than the MLP's: float32 rounding differences must not grow past 1e-6.
CNN_LR = 0.05


def reference_cnn(
    world_size: int, global_batch: int, epochs: int, dtype: torch.dtype
) -> dict[str, Tensor]:
    """One process, plain BatchNorm2d over each global batch, rank 0's initial weights."""
    model = build_cnn(100, dtype)
    batches = [torch.cat(parts) for parts in global_batches(world_size, global_batch, epochs)]
    train(model, batches, make_images(dtype), lr=CNN_LR)
    return dict(model.state_dict())


def batchnorm_data(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Input (8, 3, 5, 4) with a large mean, and an output gradient of the same shape."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, 5, 4, generator=generator, dtype=dtype) * 3 + 50
    return x, torch.randn(8, 3, 5, 4, generator=generator, dtype=dtype)


#: The uneven split of batchnorm_data's 8 samples between the two workers.
BATCHNORM_SPLIT = (slice(0, 3), slice(3, 8))


def cnn_worker(out_dir: str, global_batch: int, epochs: int) -> None:
    """SyncBatchNorm alone on an uneven split; then the CNN with SyncBatchNorm under DDP."""
    from scidevnn_cnn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

    rank, world_size = sdist.get_rank(), sdist.get_world_size()
    for dtype in (torch.float32, torch.float64):
        x, g = batchnorm_data(dtype)
        layer = SyncBatchNorm(3, dtype=dtype)
        assert layer.weight is not None and layer.bias is not None
        layer.weight.data.copy_(torch.tensor([0.5, 1.0, 2.0]))
        layer.bias.data.copy_(torch.tensor([0.1, -0.2, 0.3]))
        outputs = []
        for step in range(3):  # two training steps, then one in eval mode
            layer.train(step < 2)
            part = BATCHNORM_SPLIT[rank]
            outputs.append(layer(x[part] * (step + 1)))
            outputs.append(layer.backward(g[part]))
        state = {"outputs": outputs, "grads": [p.grad for p in layer.parameters()]}
        state["buffers"] = list(layer.buffers())
        torch.save(state, Path(out_dir) / f"syncbn-{dtype}-{rank}.pt")
    batches = [parts[rank] for parts in global_batches(world_size, global_batch, epochs)]
    for dtype in (torch.float32, torch.float64):
        model = sdist.DistributedDataParallel(convert_sync_batchnorm(build_cnn(100 + rank, dtype)))
        assert isinstance(model.module[1], SyncBatchNorm)  # type: ignore[index]
        train(model, batches, make_images(dtype), lr=CNN_LR)
        torch.save(model.module.state_dict(), Path(out_dir) / f"cnn-{dtype}-{rank}.pt")


def log_overlap(model: sdist.DistributedDataParallel, events: list[str]) -> None:
    """Record when buckets are launched and when the first layer's backward starts."""
    first_layer = model._leaves[0]
    first_backward = first_layer.backward

    def logged_backward(grad: Any) -> Any:
        events.append("first layer backward")
        return first_backward(grad)

    setattr(first_layer, "backward", logged_backward)  # noqa: B010 (an instance override)
    for bucket in model._buckets.buckets:
        launch = bucket.launch

        def logged_launch(group: object, launch: Callable[[object], None] = launch) -> None:
            events.append("all-reduce")
            launch(group)

        bucket.launch = logged_launch  # type: ignore[method-assign]


def failing_worker(mode: str) -> None:
    """Rank 1 dies (``kill``), raises (``raise``), or stalls (``hang``) at the third step."""
    model = sdist.DistributedDataParallel(build_mlp(0, torch.float32))
    x, y = make_data(torch.float32)
    loss_fn = scidevnn.CrossEntropyLoss()
    for step in range(1000):
        if sdist.get_rank() == 1 and step == 3:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif mode == "hang":
                time.sleep(120)
            else:
                raise ValueError("deliberate failure in worker 1")
        loss_fn(model(x[:8]), y[:8])
        model.backward(loss_fn.backward())


if __name__ == "__main__":  # one torchrun-style worker: RANK, WORLD_SIZE, MASTER_* in the env
    import sys

    torch.set_num_threads(1)
    try:
        sdist.init_from_env()
        failing_worker(sys.argv[1])
    except sdist.DistributedError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
