"""Data-parallel throughput: LeNet-5 training images/second for 1, 2, ... gloo workers.

Each worker runs one intra-op thread (``--threads``) and trains on its own batch of
``--batch`` images per step (weak scaling: the global batch grows with the workers, as with
torch's DDP), so the ideal is N times the one-worker figure. Scaling efficiency is
``images/s with N workers / (N * images/s with 1 worker)``. Every configuration runs under
``scidevnn.distributed.spawn`` (one worker included), on synthetic 28x28 images; the
variants are run in alternation so the machine's load hits them alike.

    python benchmarks/distributed.py --workers 1 2 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace

import torch

import scidevnn
from scidevnn import distributed as sdist
from scidevnn.plugins import get_layer


def build_lenet(sync_batchnorm: bool) -> scidevnn.Module:
    """LeNet-5 with batch norm (issue 3), every layer looked up in the plugin registry."""
    batchnorm = get_layer("SyncBatchNorm" if sync_batchnorm else "BatchNorm2d")
    conv, relu, pool, linear = (get_layer(n) for n in ("Conv2d", "ReLU", "MaxPool2d", "Linear"))
    model = scidevnn.Sequential(
        conv(1, 6, 5, padding=2), batchnorm(6), relu(), pool(2),
        conv(6, 16, 5), batchnorm(16), relu(), pool(2),
        get_layer("Flatten")(),
        linear(400, 120), relu(), linear(120, 84), relu(), linear(84, 10),
    )  # fmt: skip
    model.needs_input_grad = False
    return model


@dataclass(frozen=True)
class Settings:
    batch: int
    steps: int
    warmup: int
    bucket_cap_mb: float
    sync_batchnorm: bool
    broadcast_buffers: bool
    communicate: bool = True


def worker(settings: Settings) -> list[float]:
    """Train LeNet for warmup + steps steps; rank 0 returns the per-step wall times (s)."""
    torch.manual_seed(0)
    model = build_lenet(settings.sync_batchnorm)
    if settings.communicate:
        model = sdist.DistributedDataParallel(
            model,
            bucket_cap_mb=settings.bucket_cap_mb,
            broadcast_buffers=settings.broadcast_buffers,
        )
    optimizer = scidevnn.Adam(model.parameters(), lr=1e-3)
    loss_fn = scidevnn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(sdist.get_rank())
    images = torch.randn(settings.batch, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (settings.batch,), generator=generator)
    times: list[float] = []
    for step in range(settings.warmup + settings.steps):
        if step == settings.warmup:
            sdist.barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(images), labels)
        model.backward(loss_fn.backward())
        optimizer.step()
        if step >= settings.warmup:
            times.append(time.perf_counter() - start)
    sdist.barrier()
    return times


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--batch", type=int, default=64, help="images per worker per step")
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per worker")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--bucket-cap-mb", type=float, default=25.0, help="gradient bucket size")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm instead of BN")
    parser.add_argument(
        "--broadcast-buffers",
        action="store_true",
        help="broadcast rank 0's BN statistics before every step (torch DDP's default; "
        "mnist-cli does not)",
    )
    parser.add_argument("--backend", default=None, help="gloo or nccl (default: by device)")
    parser.add_argument(
        "--no-comm-column",
        action="store_true",
        help="skip the extra run of each count without gradient all-reduce (which shows how "
        "much of the loss is the workers sharing cores rather than communication)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings(
        args.batch,
        args.steps,
        args.warmup,
        args.bucket_cap_mb,
        args.sync_bn,
        args.broadcast_buffers,
    )
    print(
        f"LeNet-5 + BN, batch {args.batch} per worker, {args.threads} thread(s) per worker, "
        f"{args.steps} timed steps, median of {args.repeats} interleaved runs, "
        f"{'SyncBatchNorm, ' if args.sync_bn else ''}bucket cap {args.bucket_cap_mb} MB"
        f"{', buffers broadcast' if args.broadcast_buffers else ''}"
    )
    variants = [(workers, True) for workers in args.workers]
    if not args.no_comm_column:
        variants += [(workers, False) for workers in args.workers if workers > 1]
    samples: dict[tuple[int, bool], list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(args.repeats):  # interleaved: the machine's load hits every variant alike
        for workers, communicate in variants:
            run = replace(settings, communicate=communicate)
            samples[workers, communicate].append(measure(run, workers, args))
    header = f"{'workers':>7} {'ms/step':>8} {'images/s':>9} {'speed-up':>8} {'efficiency':>10}"
    print(header + ("" if args.no_comm_column else f" {'images/s, no all-reduce':>24}"))
    baseline: float | None = None
    for workers in args.workers:
        step_ms = statistics.median(ms for ms, _ in samples[workers, True])
        rate = statistics.median(r for _, r in samples[workers, True])
        if baseline is None:
            baseline = rate / workers
        speedup = rate / baseline
        line = (
            f"{workers:>7} {step_ms:>8.2f} {rate:>9.0f} {speedup:>7.2f}x {speedup / workers:>9.0%}"
        )
        if (workers, False) in samples:
            line += f" {statistics.median(r for _, r in samples[workers, False]):>24.0f}"
        print(line)
    print(
        "efficiency: images/s / (workers x images/s per worker of the first row); "
        "'no all-reduce': the same workers training independently (core sharing alone)"
    )


def measure(settings: Settings, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """One run: rank 0's median milliseconds per step and the global images per second."""
    times = sdist.spawn(
        worker, workers, settings, threads=args.threads, backend=args.backend, timeout=120
    )
    median_step = statistics.median(times)
    return median_step * 1e3, workers * settings.batch / median_step


if __name__ == "__main__":
    main()
