"""Every test starts from its own fixed random seed, derived from its name.

Inputs are random, but a run is repeatable: a failure shows up again on the next run, with the
same numbers, instead of coming and going with the draw. Hypothesis draws its examples the same
way (``derandomize``); ``HYPOTHESIS_PROFILE=explore`` lets it search afresh.
"""

import os
import zlib
from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True)
def _seed_from_test_name(request: pytest.FixtureRequest) -> Iterator[None]:
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
