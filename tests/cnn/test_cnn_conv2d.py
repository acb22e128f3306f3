"""Conv2d against torch.nn.Conv2d: forward, input gradient, weight and bias gradients, the
initialisation, every argument, both input-gradient methods, odd layouts and bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cnn_reference import DTYPES, assert_close, leaf, make_pair
from hypothesis import given, settings
from hypothesis import strategies as st

import scidevnn
from scidevnn.errors import BackwardError
from scidevnn.testing import check_finite_differences, check_layer
from scidevnn_cnn import Conv2d


def case(
    in_channels: int, out_channels: int, kernel_size: Any, shape: tuple[int, ...], **kwargs: Any
) -> tuple[dict[str, Any], tuple[int, ...]]:
    """(Conv2d arguments, input shape)."""
    args = {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel_size}
    return {**args, **kwargs}, shape


# sparse, but every argument value appears somewhere
CASES: list[tuple[dict[str, Any], tuple[int, ...]]] = [
    case(1, 6, 5, (3, 1, 12, 12), padding=2),
    case(6, 16, 5, (2, 6, 9, 9)),
    case(3, 4, 1, (2, 3, 5, 7)),
    case(3, 2, 2, (1, 3, 7, 9), stride=2),
    case(2, 3, 3, (2, 2, 8, 8), stride=2),
    case(2, 3, 3, (2, 2, 10, 11), stride=3, padding=1),
    case(2, 2, 4, (1, 2, 9, 6), stride=(2, 1), padding=(1, 2)),
    case(3, 2, (3, 5), (2, 3, 7, 13), stride=(1, 3)),
    case(1, 2, 6, (2, 1, 7, 7), padding=3),
    case(2, 3, 7, (1, 2, 9, 8), padding=1),
    case(2, 4, 3, (2, 2, 9, 9), dilation=2),
    case(2, 2, 3, (2, 2, 11, 8), dilation=(2, 1), stride=2, padding=2),
    case(4, 6, 3, (2, 4, 6, 6), groups=2, padding=1),
    case(3, 3, 3, (2, 3, 7, 7), groups=3, stride=2),
    case(6, 3, (2, 3), (1, 6, 8, 9), groups=3, dilation=2),
    case(3, 4, 3, (2, 3, 6, 5), padding="same"),
    case(2, 3, 4, (2, 2, 7, 9), padding="same", dilation=(1, 2)),
    case(3, 2, (2, 5), (1, 3, 5, 8), padding="same"),
    case(3, 2, 3, (2, 3, 5, 6), padding="valid"),
    case(2, 3, 3, (2, 2, 5, 5), bias=False, padding=1),
    case(2, 3, 3, (2, 2, 6, 7), padding=2, padding_mode="reflect"),
    case(2, 3, (3, 4), (2, 2, 5, 6), padding=(1, 3), padding_mode="replicate", stride=2),
    case(2, 2, 3, (1, 2, 4, 6), padding=(3, 1), padding_mode="circular"),
    case(2, 2, 3, (2, 2, 6, 6), padding="same", padding_mode="reflect", groups=2),
    case(3, 2, 5, (3, 5, 5), padding=1),  # unbatched
    case(1, 1, 3, (1, 4, 4), stride=2),  # unbatched
]


# torch's own note on 'same' with an even kernel; not about what these tests check
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def strides(args: dict[str, Any]) -> tuple[int, int]:
    stride = args.get("stride", 1)
    return (stride, stride) if isinstance(stride, int) else stride


# the default choice and every forced combination of (forward method, input-gradient method);
# the "rows" methods need a vertical (forward) or horizontal (input gradient) stride of 1
GRID = [
    pytest.param(args, shape, methods, id=f"{methods}:" + ",".join(
        f"{k}={v}" for k, v in args.items()) + f";x{shape}")
    for args, shape in CASES
    for methods in ((None, None), ("rows", "rows"), ("rows", "fold"), ("columns", "fold"),
                    ("columns", "rows"))
    if (methods[0] != "rows" or strides(args)[0] == 1)
    and (methods[1] != "rows" or strides(args)[1] == 1)
]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("args", "shape", "methods"), GRID)
def test_matches_torch(
    args: dict[str, Any],
    shape: tuple[int, ...],
    methods: tuple[str | None, str | None],
    dtype: torch.dtype,
) -> None:
    ours, theirs = make_pair("Conv2d", **args, dtype=dtype)  # also: same initial weights
    ours.forward_method, ours.grad_method = methods
    x = torch.randn(shape, dtype=dtype)
    check_layer(ours, theirs, x)


def test_input_gradient_is_zero_where_no_window_reached() -> None:
    # (8 - 3) is not a multiple of the stride 2: the last row and column are never read
    ours, theirs = make_pair("Conv2d", 2, 3, 3, stride=2, dtype=torch.float64)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    y = ours(x)
    grad_input = ours.backward(torch.ones_like(y))
    assert bool((grad_input[:, :, 7, :] == 0).all()) and bool((grad_input[:, :, :, 7] == 0).all())
    check_layer(ours, theirs, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_first_layer_skips_the_input_gradient(dtype: torch.dtype) -> None:
    ours, theirs = make_pair("Conv2d", 1, 6, 5, padding=2, dtype=dtype)
    ours.needs_input_grad = False
    x = torch.randn(4, 1, 10, 10, dtype=dtype)
    check_layer(ours, theirs, x, check_input_grad=False)
    ours(x)
    assert ours.backward(torch.randn(4, 6, 10, 10, dtype=dtype)) is None


@pytest.mark.parametrize("layout", ["sliced", "transposed", "channels_last", "expanded"])
def test_non_contiguous_inputs(layout: str) -> None:
    ours, theirs = make_pair("Conv2d", 3, 4, 3, padding=1, dtype=torch.float64)
    base = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    x = {
        "sliced": base[:, :, 1::2, ::2],
        "transposed": base.transpose(2, 3),
        "channels_last": base.to(memory_format=torch.channels_last),
        "expanded": base[:1].expand(3, 3, 12, 10),
    }[layout]
    assert not x.is_contiguous()
    check_layer(ours, theirs, x)
    # a non-contiguous output gradient too
    y = ours(x)
    grad = torch.randn(y.shape[::-1], dtype=torch.float64).permute(3, 2, 1, 0)
    xr = leaf(x)
    theirs(xr).backward(grad)
    assert_close(ours.backward(grad), xr.grad, "input gradient", torch.float64)


def test_large_values_float32() -> None:
    # outputs are sums of products of size ~1e3: float32 rounds each to ~1e-4, in torch as in
    # SciDevNN, so "within 1e-5" holds relative to the scale of the terms
    ours, theirs = make_pair("Conv2d", 3, 5, 3, padding=1)
    scale = 1e3
    output = check_layer(ours, theirs, torch.randn(2, 3, 8, 8) * scale, atol=1e-5 * scale)
    assert bool(output.isfinite().all())


def test_several_forwards_before_backward_accumulate() -> None:
    """Weight sharing: two calls, then the two backward calls in reverse order."""
    ours, theirs = make_pair("Conv2d", 2, 3, 3, padding=1, dtype=torch.float64)
    x1, x2 = (torch.randn(2, 2, 6, 6, dtype=torch.float64) for _ in range(2))
    x3 = torch.randn(1, 2, 5, 7, dtype=torch.float64)  # another shape in between
    g1, g2 = (
        torch.randn(2, 3, 6, 6, dtype=torch.float64),
        torch.randn(2, 3, 6, 6, dtype=torch.float64),
    )
    g3 = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    ours(x1), ours(x3), ours(x2)
    d2, d3, d1 = ours.backward(g2), ours.backward(g3), ours.backward(g1)
    r1, r2, r3 = leaf(x1), leaf(x2), leaf(x3)
    ((theirs(r1) * g1).sum() + (theirs(r2) * g2).sum() + (theirs(r3) * g3).sum()).backward()
    for ours_grad, ref in ((d1, r1), (d2, r2), (d3, r3)):
        assert_close(ours_grad, ref.grad, "input gradient", torch.float64)
    assert_close(ours.weight.grad, theirs.weight.grad, "weight.grad", torch.float64)
    assert_close(ours.bias.grad, theirs.bias.grad, "bias.grad", torch.float64)
    with pytest.raises(BackwardError):
        ours.backward(g1)


def test_no_grad_keeps_nothing() -> None:
    conv = Conv2d(2, 3, 3)
    x = torch.randn(2, 2, 6, 6)
    with scidevnn.no_grad():
        for _ in range(3):
            y = conv(x)
    assert conv.pending_backward == 0
    assert torch.equal(y, conv(x))  # same result when saving


def test_outputs_do_not_share_memory_across_calls() -> None:
    """Workspace reuse must never leak into returned tensors."""
    conv = Conv2d(1, 1, 1, bias=False)  # output copy could otherwise be a view
    x1, x2 = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    y1 = conv(x1)
    kept = y1.clone()
    y2 = conv(x2)
    assert torch.equal(y1, kept) and not torch.equal(y1, y2)
    d2 = conv.backward(torch.ones(1, 1, 4, 4))
    kept_d2 = d2.clone()
    conv.backward(torch.full((1, 1, 4, 4), 2.0))
    assert torch.equal(d2, kept_d2)


def test_finite_differences() -> None:
    conv = Conv2d(4, 2, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2,
                  padding_mode="reflect").double()  # fmt: skip
    check_finite_differences(conv, torch.randn(2, 4, 6, 7, dtype=torch.float64))


def test_state_dict_round_trip_with_torch() -> None:
    ours = Conv2d(3, 4, 3, bias=True)
    theirs = torch.nn.Conv2d(3, 4, 3)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    ours.load_state_dict(theirs.state_dict())
    assert torch.equal(ours.weight.data, theirs.weight.data)
    theirs.load_state_dict(Conv2d(3, 4, 3).state_dict())
    no_bias = Conv2d(3, 4, 3, bias=False)
    assert list(no_bias.state_dict()) == list(torch.nn.Conv2d(3, 4, 3, bias=False).state_dict())


@pytest.mark.parametrize(
    "args",
    [
        {"in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2},
        {"in_channels": 4, "out_channels": 4, "kernel_size": (1, 3), "stride": 2, "dilation": 2,
         "groups": 2, "bias": False, "padding_mode": "circular", "padding": (0, 1)},
        {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": "same"},
    ],
)  # fmt: skip
def test_repr_and_config(args: dict[str, Any]) -> None:
    ours = Conv2d(**args)
    assert repr(ours) == repr(torch.nn.Conv2d(**args))
    rebuilt = Conv2d(**ours.get_config())
    assert repr(rebuilt) == repr(ours)


@pytest.mark.parametrize(
    ("args", "shape", "message"),
    [
        ({"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (2, 4, 5, 5), "3 channels"),
        ({"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (2, 3, 5), "3 channels"),
        ({"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (3, 5), "3-D .* or 4-D"),
        ({"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (1, 1, 3, 5, 5), "3-D .* or 4-D"),
        ({"in_channels": 3, "out_channels": 2, "kernel_size": 5}, (1, 3, 4, 9), "smaller than"),
        ({"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 3,
          "padding_mode": "reflect"}, (1, 1, 3, 3), "reflect padding"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    args: dict[str, Any], shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Conv2d(**args)(torch.randn(shape))
    assert "\n" not in str(info.value) and "Conv2d" in str(info.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((3, 2, 3), {"groups": 2}, "divisible"),
        ((2, 3, 3), {"groups": 2}, "divisible"),
        ((2, 2, 3), {"padding": "full"}, "padding string"),
        ((2, 2, 3), {"padding": "same", "stride": 2}, "strided"),
        ((2, 2, 3), {"padding_mode": "mirror"}, "padding_mode"),
        ((2, 2, 0), {}, "positive"),
    ],
)
def test_bad_arguments(args: tuple[int, int, int], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Conv2d(*args, **kwargs)


def test_wrong_gradient_shape_and_dtype() -> None:
    conv = Conv2d(2, 3, 3)
    conv(torch.randn(2, 2, 5, 5))
    with pytest.raises(BackwardError, match="grad_output has shape"):
        conv.backward(torch.randn(2, 3, 4, 4))
    with pytest.raises(TypeError, match="dtype"):
        conv(torch.randn(2, 2, 5, 5, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    channels=st.integers(1, 2),
    out_per_group=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
)
def test_random_shapes(
    n: int,
    groups: int,
    channels: int,
    out_per_group: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    extra: tuple[int, int],
) -> None:
    # smallest input the dilated kernel fits in, plus a little
    h = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]) + extra[0]
    w = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]) + extra[1]
    args = {
        "in_channels": channels * groups,
        "out_channels": out_per_group * groups,
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
    }
    ours, theirs = make_pair("Conv2d", **args, dtype=torch.float64)
    check_layer(ours, theirs, torch.randn(n, channels * groups, h, w, dtype=torch.float64))
