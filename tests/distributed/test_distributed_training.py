"""Two gloo workers with global batch B end where one process with batch B ends."""

from __future__ import annotations

from pathlib import Path

import torch
from distributed_workers import mlp_worker, reference_mlp

from scidevnn import distributed as sdist

WORLD, GLOBAL_BATCH, EPOCHS = 2, 16, 2  # 6 steps per epoch, 12 in all


def test_mlp_two_workers_match_one_process(tmp_path: Path) -> None:
    """Replicas start from different seeds (DDP broadcasts rank 0's), train 12 SGD steps with
    default buckets, many small buckets, and no_sync gradient accumulation."""
    assert sdist.spawn(mlp_worker, WORLD, str(tmp_path), GLOBAL_BATCH, EPOCHS, timeout=60) == (0, 2)
    assert sdist.get_world_size() == 1 and not sdist.is_initialized()  # the parent stays single
    for dtype, atol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        expected = reference_mlp(WORLD, GLOBAL_BATCH, EPOCHS, dtype)
        start = reference_mlp(WORLD, GLOBAL_BATCH, 0, dtype)
        for variant in ("default", "small-buckets", "no_sync"):
            for rank in range(WORLD):
                state = torch.load(tmp_path / f"mlp-{dtype}-{variant}-{rank}.pt")
                assert state.keys() == expected.keys()
                for key, value in expected.items():
                    assert state[key].dtype == dtype
                    difference = (state[key] - value).abs().max().item()
                    assert difference <= atol, f"{variant} rank {rank} {key}: {difference:.3g}"
                    assert not torch.equal(value, start[key])  # training moved the weights
