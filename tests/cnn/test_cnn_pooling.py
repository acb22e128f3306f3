"""MaxPool2d and AvgPool2d against torch: forward and input gradient, ties (the gradient goes
where torch sends it), overlapping windows, padding, dilation, ceil_mode, return_indices."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cnn_reference import DTYPES, assert_close, leaf, make_pair
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from scidevnn.testing import check_layer
from scidevnn_cnn import AvgPool2d, MaxPool2d

MAX_CASES: list[tuple[dict[str, Any], tuple[int, ...]]] = [
    ({"kernel_size": 2}, (2, 3, 8, 8)),
    ({"kernel_size": 2}, (2, 3, 7, 9)),  # odd sizes: last row/column dropped
    ({"kernel_size": 3, "stride": 1}, (2, 2, 6, 7)),  # overlapping
    ({"kernel_size": 3, "stride": 2}, (1, 2, 9, 8)),  # overlapping
    ({"kernel_size": (2, 3), "stride": (1, 2)}, (2, 2, 6, 9)),
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 2, 7, 8)),
    ({"kernel_size": (4, 2), "padding": (2, 1)}, (1, 2, 9, 7)),
    ({"kernel_size": 3, "dilation": 2}, (2, 2, 9, 10)),
    ({"kernel_size": 2, "stride": 1, "dilation": (2, 1), "padding": 1}, (1, 2, 6, 6)),
    ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, (2, 2, 8, 8)),
    ({"kernel_size": 2, "ceil_mode": True}, (2, 2, 7, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 2, 6, 9)),
    ({"kernel_size": 3, "stride": 3, "padding": 1, "ceil_mode": True}, (1, 1, 7, 7)),
    ({"kernel_size": 1}, (2, 2, 3, 3)),
    ({"kernel_size": 2}, (3, 6, 6)),  # unbatched
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 5, 5)),  # unbatched
]


def with_ties(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Small integers: most windows hold their maximum more than once."""
    return torch.randint(-2, 3, shape).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("values", ["random", "ties", "relu"])
@pytest.mark.parametrize(("args", "shape"), MAX_CASES)
def test_max_pool_matches_torch(
    args: dict[str, Any], shape: tuple[int, ...], values: str, dtype: torch.dtype
) -> None:
    ours, theirs = make_pair("MaxPool2d", **args)
    x = {
        "random": torch.randn(shape, dtype=dtype),
        "ties": with_ties(shape, dtype),
        "relu": torch.randn(shape, dtype=dtype).clamp_min(0),  # windows of zeros
    }[values]
    check_layer(ours, theirs, x)


def test_ties_go_to_the_first_maximum_in_scan_order() -> None:
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0  # window (0, 0): both tie, (0, 1) comes first
    pool = MaxPool2d(2)
    y = pool(x)
    grad = pool.backward(torch.ones_like(y))
    assert grad[0, 0, 0, 1] == 1 and grad[0, 0, 1, 0] == 0
    assert float(grad.sum()) == 4.0  # all-zero windows send theirs to their first element
    assert grad[0, 0, 0, 2] == 1 and grad[0, 0, 2, 0] == 1 and grad[0, 0, 2, 2] == 1


def test_overlapping_windows_accumulate() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0  # the maximum of all four 3x3 windows with stride 2
    pool = MaxPool2d(3, stride=2)
    y = pool(x)
    assert bool((y == 1).all())
    grad = pool.backward(torch.ones_like(y))
    assert grad[0, 0, 2, 2] == 4 and float(grad.sum()) == 4


@pytest.mark.parametrize(("args", "shape"), MAX_CASES)
def test_return_indices_equal_torch(args: dict[str, Any], shape: tuple[int, ...]) -> None:
    x = with_ties(shape, torch.float64)
    out, indices = MaxPool2d(**args, return_indices=True)(x)
    ref_out, ref_indices = torch.nn.MaxPool2d(**args, return_indices=True)(x)
    assert torch.equal(out, ref_out) and torch.equal(indices, ref_indices)
    assert indices.dtype == torch.int64


def test_return_indices_backward_takes_the_value_gradient() -> None:
    pool = MaxPool2d(2, return_indices=True)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    out, _ = pool(x)
    grad = torch.randn_like(out)
    xr = leaf(x)
    torch.nn.MaxPool2d(2)(xr).backward(grad)
    assert_close(pool.backward(grad), xr.grad, "input gradient", torch.float64)


def test_channels_last_and_non_contiguous_inputs() -> None:
    base = torch.randn(2, 3, 10, 12, dtype=torch.float64)
    for x in (
        base.to(memory_format=torch.channels_last),
        base[:, :, 1:, ::2],
        base.transpose(2, 3),
    ):
        ours, theirs = make_pair("MaxPool2d", 3, stride=2, padding=1)
        check_layer(ours, theirs, x)
        ours, theirs = make_pair("AvgPool2d", 2)
        check_layer(ours, theirs, x)


AVG_CASES: list[tuple[dict[str, Any], tuple[int, ...]]] = [
    ({"kernel_size": 2}, (2, 3, 8, 8)),
    ({"kernel_size": 2}, (2, 3, 7, 9)),
    ({"kernel_size": 3, "stride": 1}, (2, 2, 6, 7)),
    ({"kernel_size": (2, 3), "stride": (1, 2)}, (2, 2, 6, 9)),
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 2, 7, 8)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, (2, 2, 7, 8)),
    ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, (2, 2, 8, 8)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 2, 6, 9)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
      "count_include_pad": False}, (1, 2, 6, 9)),
    ({"kernel_size": 2, "ceil_mode": True, "divisor_override": 3}, (2, 2, 7, 5)),
    ({"kernel_size": (4, 2), "padding": (2, 1), "divisor_override": 5}, (1, 2, 9, 7)),
    ({"kernel_size": 2}, (3, 6, 6)),  # unbatched
]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("args", "shape"), AVG_CASES)
def test_avg_pool_matches_torch(
    args: dict[str, Any], shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    ours, theirs = make_pair("AvgPool2d", **args)
    check_layer(ours, theirs, torch.randn(shape, dtype=dtype))


@settings(max_examples=40, deadline=None)
@given(
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad_fraction=st.tuples(st.booleans(), st.booleans()),
    ceil_mode=st.booleans(),
    size=st.tuples(st.integers(0, 6), st.integers(0, 6)),
    ties=st.booleans(),
    average=st.booleans(),
)
def test_random_pooling(
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad_fraction: tuple[bool, bool],
    ceil_mode: bool,
    size: tuple[int, int],
    ties: bool,
    average: bool,
) -> None:
    padding = tuple(k // 2 if use else 0 for k, use in zip(kernel, pad_fraction, strict=True))
    if average:
        dilation = (1, 1)
    # large enough that every window holds an input element (torch is undefined otherwise)
    h = dilation[0] * (kernel[0] - 1) + 1 + size[0]
    w = dilation[1] * (kernel[1] - 1) + 1 + size[1]
    shape = (2, 2, h, w)
    x = with_ties(shape, torch.float64) if ties else torch.randn(shape, dtype=torch.float64)
    if average:
        ours, theirs = make_pair("AvgPool2d", kernel, stride, padding, ceil_mode)
    else:
        ours, theirs = make_pair(
            "MaxPool2d", kernel, stride, padding, dilation, ceil_mode=ceil_mode
        )
    check_layer(ours, theirs, x)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_bad_arguments_and_inputs(cls: type[Any]) -> None:
    with pytest.raises(ValueError, match="half of the kernel size"):
        cls(2, padding=2)
    with pytest.raises(ValueError, match=r"3-D .* or 4-D"):
        cls(2)(torch.randn(4, 4))
    with pytest.raises(ValueError, match="too small"):
        cls(3)(torch.randn(1, 1, 2, 5))


def test_repr_and_config_like_torch() -> None:
    for args in ({"kernel_size": 2}, {"kernel_size": (3, 2), "stride": 1, "padding": 1,
                                      "dilation": 2, "ceil_mode": True}):  # fmt: skip
        assert repr(MaxPool2d(**args)) == repr(torch.nn.MaxPool2d(**args))
        assert repr(MaxPool2d(**MaxPool2d(**args).get_config())) == repr(MaxPool2d(**args))
    args = {"kernel_size": 3, "stride": 2, "padding": 1}
    assert repr(AvgPool2d(**args)) == repr(torch.nn.AvgPool2d(**args))
