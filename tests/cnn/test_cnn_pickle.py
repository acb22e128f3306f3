"""A used Conv2d pickles (and deep-copies) without its workspace, and the copy still matches
torch.nn.Conv2d: a trained model handed back from a worker process stays small."""

from __future__ import annotations

import copy
import pickle

import torch
from cnn_reference import make_pair

from scidevnn.testing import check_layer
from scidevnn_cnn import Conv2d


def workspace_bytes(layer: Conv2d) -> int:
    ws = layer._workspace
    kept = [tensor for tensor, _ in ws._scratch.values()]
    kept += [tensor for free in ws._free.values() for tensor in free]
    return sum(tensor.nbytes for tensor in kept)


def test_used_conv2d_pickles_small_and_the_copy_matches_torch() -> None:
    ours, theirs = make_pair("Conv2d", 3, 8, 5, padding=2, dtype=torch.float64)
    fresh = len(pickle.dumps(ours))
    x = torch.randn(32, 3, 28, 28, dtype=torch.float64)
    check_layer(ours, theirs, x)  # forward and backward: the workspace fills up
    assert workspace_bytes(ours) > 1_000_000
    parameters = sum(p.data.nbytes for p in ours.parameters())
    for restored in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert isinstance(restored, Conv2d)
        assert workspace_bytes(restored) == 0
        restored.zero_grad()
        theirs.zero_grad()
        check_layer(restored, theirs, x)
        assert workspace_bytes(restored) > 1_000_000  # it builds its own at its first call
    # the parameters and their gradients, not the megabytes of scratch
    assert len(pickle.dumps(ours)) < fresh + 2 * parameters
    assert len(pickle.dumps(ours)) < 64_000
