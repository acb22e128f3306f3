"""One training step of the row-by-row MNIST LSTM: SciDevNN against torch.nn.

A 28x28 image is read as 28 steps of 28 features by an LSTM with 128 hidden units; a linear
layer 128->10 reads the last hidden state. Batch 64, cross-entropy, backward, Adam. Four
candidates in one process with the same weights, timed in alternation:

- torch.nn.LSTMCell unrolled in a Python loop, autograd (the baseline the ratio refers to);
- torch.nn.LSTM (its fused CPU kernel), autograd, for information;
- scidevnn_rnn.LSTMCell unrolled in a Python loop, backward called once per step;
- scidevnn_rnn.LSTM(batch_first=True) + LastStep + Linear in a Sequential (what the app uses).

``--profile`` adds the median forward / backward / optimizer milliseconds of the SciDevNN
candidates.

    python benchmarks/lstm.py [--steps 200] [--threads 2] [--batch 64] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _timing import interleaved, report
from torch import Tensor

import scidevnn
from scidevnn.plugins import get_layer

ROWS, FEATURES, HIDDEN, CLASSES = 28, 28, 128, 10


class RowByRow(scidevnn.Module):
    """``Linear(LSTMCell unrolled over the rows of x)``: x (N, 28, 28) -> logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = get_layer("LSTMCell")(FEATURES, HIDDEN)
        self.linear = scidevnn.Linear(HIDDEN, CLASSES)
        self.cell.needs_input_grad = False  # the pixels are data

    def forward(self, x: Tensor) -> Tensor:
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        assert state is not None
        self.save_for_backward(x.shape[1])
        logits: Tensor = self.linear(state[0])
        return logits

    def backward(self, grad_output: Tensor) -> None:
        (steps,) = self.saved_tensors()
        grad_h: Tensor | None = self.linear.backward(grad_output)
        grad_c: Tensor | None = None
        for _ in range(steps):
            _, (grad_h, grad_c) = self.cell.backward((grad_h, grad_c))


class TorchRowByRow(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(FEATURES, HIDDEN)
        self.linear = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        assert state is not None
        out: Tensor = self.linear(state[0])
        return out


class TorchSequence(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(x)
        out: Tensor = self.linear(h_n[-1])
        return out


def sequence_model() -> scidevnn.Sequential:
    model = scidevnn.Sequential(
        get_layer("LSTM")(FEATURES, HIDDEN, batch_first=True),
        get_layer("LastStep")(),
        scidevnn.Linear(HIDDEN, CLASSES),
    )
    model.needs_input_grad = False
    return model


def torch_step(model: torch.nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()

    return step


def our_step(
    model: scidevnn.Module, x: Tensor, y: Tensor, phases: dict[str, list[float]] | None = None
) -> Callable[[], None]:
    criterion = scidevnn.CrossEntropyLoss()
    optimizer = scidevnn.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        t0 = time.perf_counter()
        optimizer.zero_grad()
        criterion(model(x), y)
        t1 = time.perf_counter()
        model.backward(criterion.backward())
        t2 = time.perf_counter()
        optimizer.step()
        if phases is not None:
            phases["forward"].append(t1 - t0)
            phases["backward"].append(t2 - t1)
            phases["adam"].append(time.perf_counter() - t2)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="per-phase times of SciDevNN")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours_cell = RowByRow()
    ours_seq = sequence_model()
    theirs_cell = TorchRowByRow()
    theirs_seq = TorchSequence()
    theirs_cell.load_state_dict(ours_cell.state_dict())
    weights = {f"lstm.{key}_l0": value for key, value in ours_cell.cell.state_dict().items()} | {
        f"linear.{key}": value for key, value in ours_cell.linear.state_dict().items()
    }
    theirs_seq.load_state_dict(weights)
    ours_seq.load_state_dict(
        {
            key.replace("lstm.", "0.").replace("linear.", "2."): value.clone()
            for key, value in weights.items()
        }
    )

    x = torch.rand(args.batch, ROWS, FEATURES)
    y = torch.randint(0, CLASSES, (args.batch,))
    with torch.no_grad(), scidevnn.no_grad():
        reference = theirs_cell(x)
        for name, logits in (("LSTMCell loop", ours_cell(x)), ("LSTM layer", ours_seq(x))):
            difference = (logits - reference).abs().max().item()
            assert difference < 1e-4, f"SciDevNN {name} disagrees with torch by {difference}"

    phases: dict[str, dict[str, list[float]]] = {
        name: {"forward": [], "backward": [], "adam": []} for name in ("cell", "seq")
    }
    candidates = {
        "torch LSTMCell loop": torch_step(theirs_cell, x, y),
        "torch nn.LSTM": torch_step(theirs_seq, x, y),
        "SciDevNN LSTMCell loop": our_step(
            ours_cell, x, y, phases["cell"] if args.profile else None
        ),
        "SciDevNN LSTM layer": our_step(ours_seq, x, y, phases["seq"] if args.profile else None),
    }
    medians = interleaved(candidates, args.steps)
    print(
        report(
            f"Row-by-row MNIST LSTM(28, 128) + Linear(128, 10), batch {args.batch}, Adam, "
            f"{args.threads} threads",
            medians,
            baseline="torch LSTMCell loop",
        )
    )
    if args.profile:
        for name, label in (("cell", "SciDevNN LSTMCell loop"), ("seq", "SciDevNN LSTM layer")):
            parts = ", ".join(
                f"{phase} {statistics.median(values) * 1e3:.3f} ms"
                for phase, values in phases[name].items()
            )
            print(f"{label}: {parts}")


if __name__ == "__main__":
    main()
