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

import torch
from torch import Tensor

import scidevnn
from scidevnn import distributed as sdist

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
    dtype: torch.dtype,
    accumulate: Callable[[], AbstractContextManager[None]] | None = None,
) -> None:
    """SGD with momentum on cross-entropy; ``accumulate`` wraps the first half-batch backward."""
    x, y = make_data(dtype)
    loss_fn = scidevnn.CrossEntropyLoss()
    optimizer = scidevnn.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for index in batches:
        optimizer.zero_grad()
        if accumulate is None:
            loss_fn(model(x[index]), y[index])
            model.backward(loss_fn.backward())
        else:  # two micro-batches: the first one's gradient stays local
            halves = index.chunk(2)
            with accumulate():
                loss_fn(model(x[halves[0]]), y[halves[0]])
                model.backward(loss_fn.backward() * 0.5)
            loss_fn(model(x[halves[1]]), y[halves[1]])
            model.backward(loss_fn.backward() * 0.5)
        optimizer.step()


def reference_mlp(world_size: int, global_batch: int, epochs: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """One process, global batches made of every rank's share of the step; rank 0's start."""
    model = build_mlp(100, dtype)
    batches = [torch.cat(parts) for parts in global_batches(world_size, global_batch, epochs)]
    train(model, batches, dtype)
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
            train(model, batches, dtype)
            if variant == "small-buckets":  # communication started before the backward ended
                assert events.index("all-reduce") < events.index("first layer backward")
            torch.save(model.module.state_dict(), Path(out_dir) / f"mlp-{dtype}-{variant}-{rank}.pt")
        model = sdist.DistributedDataParallel(build_mlp(100 + rank, dtype))
        train(model, batches, dtype, accumulate=model.no_sync)
        torch.save(model.module.state_dict(), Path(out_dir) / f"mlp-{dtype}-no_sync-{rank}.pt")
    return rank, world_size


def log_overlap(model: sdist.DistributedDataParallel, events: list[str]) -> None:
    """Record when buckets are launched and when the first layer's backward starts."""
    first_layer = model._leaves[0]
    first_backward = first_layer.backward

    def logged_backward(grad: Tensor) -> Tensor | None:
        events.append("first layer backward")
        return first_backward(grad)  # type: ignore[no-any-return]

    first_layer.backward = logged_backward  # type: ignore[method-assign]
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
