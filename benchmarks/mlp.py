"""One training step of an MLP 784-256-10 (ReLU) at batch 128: SciDevNN against torch.nn.

Forward, cross-entropy, backward and an Adam step, both frameworks in the same process with
the same weights, timed in alternation; prints milliseconds per step and the ratio.

    python benchmarks/mlp.py [--steps 400] [--threads 2] [--batch 128]
"""

from __future__ import annotations

import argparse

import torch
from _timing import interleaved, report

import scidevnn
from scidevnn.plugins import get_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    relu = get_layer("ReLU")  # from scidevnn-cnn
    ours = scidevnn.Sequential(scidevnn.Linear(784, 256), relu(), scidevnn.Linear(256, 10))
    ours.needs_input_grad = False
    nn = torch.nn
    theirs = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    theirs.load_state_dict(ours.state_dict())
    our_loss, their_loss = scidevnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    our_opt = scidevnn.Adam(ours.parameters(), lr=1e-3)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=1e-3)

    x = torch.randn(args.batch, 784)
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
            f"MLP 784-256-10, batch {args.batch}, Adam, {args.threads} threads",
            medians,
            baseline="torch.nn + autograd",
        )
    )


if __name__ == "__main__":
    main()
