"""A worker that dies, stalls or never joins: the others exit non-zero, with a message, in time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed_workers import failing_worker

from scidevnn import distributed as sdist

SCRIPT = Path(__file__).with_name("distributed_workers.py")
TIMEOUT_S = 4  # the collectives' timeout given to the workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_worker(rank: int, world_size: int, port: int, mode: str) -> subprocess.Popen[str]:
    """One worker with the environment torchrun would give it."""
    env = dict(
        os.environ,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        SCIDEVNN_DIST_TIMEOUT=str(TIMEOUT_S),
        OMP_NUM_THREADS="1",
    )
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode], env=env, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], limit: float) -> tuple[int, str, float]:
    """Exit code, stderr and seconds taken; the test fails if it takes longer than ``limit``."""
    start = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"worker still running after {limit} s")
    return process.returncode, stderr, time.monotonic() - start


@pytest.mark.parametrize("mode", ["kill", "hang"])
def test_survivor_exits_when_its_peer_dies_or_stalls(mode: str) -> None:
    port = free_port()
    survivor, peer = start_worker(0, 2, port, mode), start_worker(1, 2, port, mode)
    try:
        code, stderr, _ = finish(survivor, limit=60)
    finally:
        peer.kill()
        peer.communicate()
    assert code == 1
    assert "error: worker 0 of 2: gradient all-reduce failed: a peer worker died" in stderr
    assert "Traceback" not in stderr


def test_peer_that_never_joins_ends_the_wait_after_the_timeout() -> None:
    start = time.monotonic()
    code, stderr, _ = finish(start_worker(0, 2, free_port(), "kill"), limit=60)
    elapsed = time.monotonic() - start
    assert code == 1
    assert "could not join the others at 127.0.0.1" in stderr and f"within {TIMEOUT_S} s" in stderr
    assert elapsed >= TIMEOUT_S


def test_spawn_reraises_the_workers_error_and_stops_the_others() -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match="deliberate failure in worker 1") as caught:
        sdist.spawn(failing_worker, 2, "raise", timeout=TIMEOUT_S)
    assert "(raised in worker 1 of 2)" in caught.value.__notes__
    assert time.monotonic() - start < 60


def test_spawn_names_a_worker_that_was_killed() -> None:
    start = time.monotonic()
    with pytest.raises(sdist.DistributedError, match="worker 1 of 2 was killed by SIGKILL"):
        sdist.spawn(failing_worker, 2, "kill", timeout=TIMEOUT_S)
    assert time.monotonic() - start < 60
