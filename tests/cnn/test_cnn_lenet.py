"""The benchmark's LeNet-5 with batch norm, whole, against the same network in torch.nn: the
output, every parameter gradient and the running statistics, then a few Adam steps."""

from __future__ import annotations

import torch
from cnn_reference import assert_close

import scidevnn
from scidevnn.testing import check_layer
from scidevnn_cnn import BatchNorm2d, Conv2d, MaxPool2d, ReLU


def models(dtype: torch.dtype) -> tuple[scidevnn.Sequential, torch.nn.Sequential]:
    torch.manual_seed(0)
    ours = scidevnn.Sequential(
        Conv2d(1, 6, 5, padding=2), BatchNorm2d(6), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5), BatchNorm2d(16), ReLU(), MaxPool2d(2),
        scidevnn.Flatten(), scidevnn.Linear(400, 120), ReLU(),
        scidevnn.Linear(120, 84), ReLU(), scidevnn.Linear(84, 10),
    ).to(dtype=dtype)  # fmt: skip
    nn = torch.nn
    theirs = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ).to(dtype=dtype)  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def test_forward_and_backward_of_the_whole_network() -> None:
    for dtype in (torch.float64, torch.float32):
        ours, theirs = models(dtype)
        x = torch.randn(8, 1, 28, 28, dtype=dtype)
        check_layer(ours, theirs, x)
        ours.eval()
        check_layer(ours, theirs, x)


def test_training_steps_follow_torch() -> None:
    ours, theirs = models(torch.float64)
    ours.needs_input_grad = False  # the images are data
    our_opt = scidevnn.Adam(ours.parameters(), lr=1e-3)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    our_loss, their_loss = scidevnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    for _ in range(3):
        x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
        y = torch.randint(0, 10, (16,))
        our_opt.zero_grad()
        loss = our_loss(ours(x), y)
        assert ours.backward(our_loss.backward()) is None
        our_opt.step()
        their_opt.zero_grad()
        reference = their_loss(theirs(x), y)
        reference.backward()
        their_opt.step()
        assert_close(loss, reference.detach(), "loss", torch.float64)
    for key, value in theirs.state_dict().items():
        assert_close(ours.state_dict()[key].double(), value.double(), key, torch.float64)
