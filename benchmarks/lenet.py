"""One training step of LeNet-5 with batch norm at batch 64: SciDevNN against torch.nn.

conv(1->6, 5x5, pad 2), BN, ReLU, maxpool 2; conv(6->16, 5x5), BN, ReLU, maxpool 2; flatten;
linear 400->120, ReLU; 120->84, ReLU; 84->10. Forward, cross-entropy, backward and an Adam step,
both frameworks in the same process with the same weights, timed in alternation; prints
milliseconds per step and the ratio. Then a per-layer table for the SciDevNN model, the way
Caffe's ``time`` command reports it: mean forward and backward milliseconds of every layer over
``--layer-steps`` steps, plus the loss and the optimizer; the rows add up to the total.

    python benchmarks/lenet.py [--steps 400] [--threads 2] [--batch 64] [--layer-steps 200]

The machines are shared: with two threads, any other busy process makes both frameworks stall
on their thread synchronisation, so compare ratios of runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import interleaved, report
from torch import Tensor

import scidevnn
from scidevnn.plugins import get_layer


def scidevnn_lenet() -> scidevnn.Sequential:
    """The benchmark's LeNet-5, built from the registry (Conv2d & co. from scidevnn-cnn)."""
    conv, bn, relu, pool = (
        get_layer(name) for name in ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d")
    )
    model = scidevnn.Sequential(
        conv(1, 6, 5, padding=2), bn(6), relu(), pool(2),
        conv(6, 16, 5), bn(16), relu(), pool(2),
        scidevnn.Flatten(),
        scidevnn.Linear(400, 120), relu(),
        scidevnn.Linear(120, 84), relu(),
        scidevnn.Linear(84, 10),
    )  # fmt: skip
    model.needs_input_grad = False  # the images are data: no gradient for them
    return model


def torch_lenet() -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )  # fmt: skip


def layer_table(
    model: scidevnn.Sequential, x: Tensor, y: Tensor, steps: int, threads: int
) -> str:
    """Mean forward/backward milliseconds per layer over ``steps`` training steps.

    Every part of a step is timed in the same steps, so the rows add up to the total (means add
    up; medians would not). Layers run one by one, as ``Sequential`` runs them.
    """
    layers = list(model)
    layers[0].needs_input_grad = False
    loss_fn = scidevnn.CrossEntropyLoss()
    optimizer = scidevnn.Adam(model.parameters(), lr=1e-3)
    forward = [0.0] * len(layers)
    backward = [0.0] * len(layers)
    extra = {"loss forward+backward": 0.0, "optimizer (zero_grad+step)": 0.0}
    clock = time.perf_counter
    for step in range(steps + 5):
        record = step >= 5  # 5 warm-up steps
        start = clock()
        optimizer.zero_grad()
        times = [clock()]
        out = x
        for layer in layers:
            out = layer(out)
            times.append(clock())
        loss_fn(out, y)
        grad = loss_fn.backward()
        times.append(clock())
        for layer in reversed(layers):
            grad = layer.backward(grad)
            times.append(clock())
        optimizer.step()
        end = clock()
        if not record:
            continue
        n = len(layers)
        for i in range(n):
            forward[i] += times[i + 1] - times[i]
            backward[n - 1 - i] += times[n + 2 + i] - times[n + 1 + i]
        extra["loss forward+backward"] += times[n + 1] - times[n]
        extra["optimizer (zero_grad+step)"] += (times[0] - start) + (end - times[-1])

    def ms(total: float) -> str:
        return f"{total / steps * 1e3:>9.3f}"

    lines = [
        f"SciDevNN LeNet-5 per layer: mean ms over {steps} steps, {threads} threads",
        f"{'layer':<28}{'forward':>9}{'backward':>9}{'total':>9}",
    ]
    for i, layer in enumerate(layers):
        name = f"{i:>2} {type(layer).__name__}"
        lines.append(f"{name:<28}{ms(forward[i])}{ms(backward[i])}{ms(forward[i] + backward[i])}")
    for name, seconds in extra.items():
        lines.append(f"{name:<28}{'':>9}{'':>9}{ms(seconds)}")
    total_f, total_b = sum(forward), sum(backward)
    total = total_f + total_b + sum(extra.values())
    lines.append(f"{'total':<28}{ms(total_f)}{ms(total_b)}{ms(total)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--layer-steps", type=int, default=200, help="steps of the per-layer table (0: none)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = scidevnn_lenet()
    theirs = torch_lenet()
    theirs.load_state_dict(ours.state_dict())
    our_loss, their_loss = scidevnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    our_opt = scidevnn.Adam(ours.parameters(), lr=1e-3)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=1e-3)

    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))

    def step_ours() -> None:
        our_opt.zero_grad()
        our_loss(ours(x), y)
        ours.backward(our_loss.backward())
        our_opt.step()

    def step_torch() -> None:
        their_opt.zero_grad()
        their_loss(theirs(x), y).backward()
        their_opt.step()

    medians = interleaved({"torch.nn + autograd": step_torch, "SciDevNN": step_ours}, args.steps)
    print(
        report(
            f"LeNet-5 + BatchNorm, batch {args.batch}, Adam, {args.threads} threads",
            medians,
            baseline="torch.nn + autograd",
        )
    )
    if args.layer_steps > 0:
        print()
        print(layer_table(ours, x, y, args.layer_steps, args.threads))


if __name__ == "__main__":
    main()
