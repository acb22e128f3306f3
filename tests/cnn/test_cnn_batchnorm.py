"""BatchNorm2d against torch.nn.BatchNorm2d: training and evaluation forward and backward, the
running statistics over several steps (momentum and cumulative average), every flag."""

from __future__ import annotations

import pytest
import torch
from cnn_reference import DTYPES, assert_close, leaf, make_pair

from scidevnn.testing import check_finite_differences, check_layer
from scidevnn_cnn import BatchNorm2d


def randomise_affine(ours: BatchNorm2d, theirs: torch.nn.Module) -> None:
    """Scale and shift away from the (1, 0) start, the same in both."""
    if ours.weight is not None and ours.bias is not None:
        ours.weight.data.uniform_(0.5, 1.5)
        ours.bias.data.uniform_(-1, 1)
        theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("momentum", [0.1, None, 0.7])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_several_steps_of_training_then_eval(
    dtype: torch.dtype, momentum: float | None, affine: bool, track_running_stats: bool
) -> None:
    ours, theirs = make_pair(
        "BatchNorm2d", 3, eps=1e-3, momentum=momentum, affine=affine,
        track_running_stats=track_running_stats, dtype=dtype,
    )  # fmt: skip
    randomise_affine(ours, theirs)
    for step in range(4):
        x = torch.randn(4, 3, 5, 6, dtype=dtype) * 3 + step  # the statistics move
        ours.train()
        # check_layer compares output, input and parameter gradients, and every buffer after
        # the forward (running_mean, running_var, num_batches_tracked); it loads our state
        # into torch first, so each step starts from the same running statistics
        check_layer(ours, theirs, x)
        ours.eval()
        check_layer(ours, theirs, torch.randn(2, 3, 4, 4, dtype=dtype) * 2 - 1)
    if track_running_stats:
        assert ours.num_batches_tracked is not None
        assert ours.num_batches_tracked.dtype == torch.int64 and int(ours.num_batches_tracked) == 4


def test_running_statistics_follow_torch_without_reloading() -> None:
    """Both run side by side for 6 steps: running stats drift identically."""
    for momentum in (0.1, None):
        ours, theirs = make_pair("BatchNorm2d", 4, momentum=momentum, dtype=torch.float64)
        for step in range(6):
            x = torch.randn(3, 4, 5, 5, dtype=torch.float64) * (step + 1) + step
            ours(x)
            theirs(x)
            ours.clear_saved()
        for key, value in theirs.state_dict().items():
            assert_close(ours.state_dict()[key].double(), value.double(), key, torch.float64)


def test_scale_without_shift() -> None:
    ours, theirs = make_pair("BatchNorm2d", 3, bias=False, dtype=torch.float64)
    ours.weight.data.uniform_(0.5, 1.5)  # type: ignore[union-attr]
    for mode in (True, False):
        ours.train(mode)
        check_layer(ours, theirs, torch.randn(2, 3, 4, 5, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 2, 3, 3), (5, 2, 1, 1), (2, 3, 7, 5)])
def test_batch_shapes_and_large_offsets(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    ours, theirs = make_pair("BatchNorm2d", shape[1], dtype=dtype)
    randomise_affine(ours, theirs)
    check_layer(ours, theirs, torch.randn(shape, dtype=dtype) * 5 + 20)


def test_channels_last_and_non_contiguous_inputs() -> None:
    base = torch.randn(3, 4, 6, 8, dtype=torch.float64)
    for x in (
        base.to(memory_format=torch.channels_last),
        base[:, :, ::2, 1:],
        base.transpose(2, 3),
    ):
        ours, theirs = make_pair("BatchNorm2d", 4, dtype=torch.float64)
        randomise_affine(ours, theirs)
        check_layer(ours, theirs, x)


def test_first_layer_skips_the_input_gradient() -> None:
    ours, theirs = make_pair("BatchNorm2d", 2, dtype=torch.float64)
    ours.needs_input_grad = False
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    check_layer(ours, theirs, x, check_input_grad=False)
    ours(x)
    assert ours.backward(torch.randn_like(x)) is None


def test_two_forwards_before_backward() -> None:
    ours, theirs = make_pair("BatchNorm2d", 2, dtype=torch.float64)
    x1, x2 = (
        torch.randn(3, 2, 4, 4, dtype=torch.float64),
        torch.randn(2, 2, 3, 5, dtype=torch.float64),
    )
    g1, g2 = torch.randn_like(x1), torch.randn_like(x2)
    ours(x1)
    ours(x2)
    d2, d1 = ours.backward(g2), ours.backward(g1)
    r1, r2 = leaf(x1), leaf(x2)
    ((theirs(r1) * g1).sum() + (theirs(r2) * g2).sum()).backward()
    assert_close(d1, r1.grad, "input gradient 1", torch.float64)
    assert_close(d2, r2.grad, "input gradient 2", torch.float64)
    assert_close(ours.weight.grad, theirs.weight.grad, "weight.grad", torch.float64)
    assert_close(ours.bias.grad, theirs.bias.grad, "bias.grad", torch.float64)


def test_finite_differences_in_both_modes() -> None:
    bn = BatchNorm2d(3, dtype=torch.float64)
    bn.weight.data.uniform_(0.5, 1.5)  # type: ignore[union-attr]
    x = torch.randn(3, 3, 2, 3, dtype=torch.float64)
    check_finite_differences(bn, x)
    bn.running_var.uniform_(0.5, 2)  # type: ignore[union-attr]
    check_finite_differences(bn.eval(), x)


def test_one_value_per_channel_in_training_is_an_error_like_torch() -> None:
    x = torch.randn(1, 3, 1, 1)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm2d(3)(x)
    with pytest.raises(ValueError, match="expected more than 1 value per channel") as info:
        BatchNorm2d(3)(x)
    assert "torch.Size([1, 3, 1, 1])" in str(info.value)
    BatchNorm2d(3).eval()(x)  # fine with running statistics


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="4-D"):
        BatchNorm2d(3)(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="3 channels"):
        BatchNorm2d(3)(torch.randn(2, 4, 4, 4))


def test_state_dict_and_repr_like_torch() -> None:
    for kwargs in (
        {},
        {"affine": False},
        {"track_running_stats": False},
        {"momentum": None},
        {"bias": False},
    ):
        ours, theirs = BatchNorm2d(5, **kwargs), torch.nn.BatchNorm2d(5, **kwargs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert repr(ours) == repr(theirs)
        ours.load_state_dict(theirs.state_dict())
        theirs.load_state_dict(ours.state_dict())
