"""ReLU and Dropout/Dropout2d against torch: values, gradients, train/eval, the 1/(1-p)
scaling, the statistics of the masks, and torch's mask under the same seed."""

from __future__ import annotations

import pytest
import torch
from cnn_reference import DTYPES, assert_close, leaf, make_pair

from scidevnn.testing import check_layer
from scidevnn_cnn import Dropout, Dropout2d, ReLU


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 6, 7), (7,), (1, 1, 1, 1)])
def test_relu_matches_torch(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=dtype)
    x.view(-1)[0] = 0.0  # the kink: gradient 0, as torch
    check_layer(ReLU(), torch.nn.ReLU(), x)
    check_layer(ReLU(), torch.nn.ReLU(), x.round() * 1e4)


def test_relu_inplace() -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    expected = torch.relu(x)
    relu = ReLU(inplace=True)
    y = relu(x)
    assert y is x and torch.equal(x, expected)
    xr = leaf(x)
    torch.relu(xr).backward(torch.ones_like(x))
    assert_close(relu.backward(torch.ones_like(x)), xr.grad, "input gradient", torch.float64)
    assert repr(relu) == repr(torch.nn.ReLU(inplace=True))


@pytest.mark.parametrize("name", ["Dropout", "Dropout2d"])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_dropout_mask_and_gradient_equal_torch_under_the_same_seed(name: str, p: float) -> None:
    ours, theirs = make_pair(name, p)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    torch.manual_seed(7)
    y = ours(x)
    torch.manual_seed(7)
    xr = leaf(x)
    yr = theirs(xr)
    assert torch.equal(y, yr)
    grad = torch.randn_like(x)
    yr.backward(grad)
    assert torch.equal(ours.backward(grad), xr.grad)


@pytest.mark.parametrize("cls", [Dropout, Dropout2d])
def test_eval_is_the_identity(cls: type[Dropout]) -> None:
    layer = cls(0.5).eval()
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(layer(x), x)
    g = torch.randn_like(x)
    assert torch.equal(layer.backward(g), g)


def test_dropout_statistics() -> None:
    torch.manual_seed(0)
    p = 0.3
    layer = Dropout(p)
    x = torch.ones(200, 500)
    y = layer(x)
    kept = y != 0
    assert abs(float(kept.float().mean()) - (1 - p)) < 0.01
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    grad = layer.backward(torch.ones_like(x))
    assert torch.equal(grad, y)  # the same mask and scale
    assert abs(float(y.mean()) - 1.0) < 0.01  # unbiased in expectation


def test_dropout2d_zeroes_whole_channels() -> None:
    torch.manual_seed(0)
    p = 0.4
    layer = Dropout2d(p)
    x = torch.randn(64, 32, 3, 3).abs() + 0.1
    y = layer(x)
    per_channel = (y != 0).flatten(2)
    assert bool((per_channel.all(2) | ~per_channel.any(2)).all())  # all or nothing
    dropped = float((~per_channel.any(2)).float().mean())
    assert abs(dropped - p) < 0.03
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / (1 - p))


def test_dropout2d_unbatched_input_is_one_image() -> None:
    """(C, H, W): one draw per channel (torch.nn.Dropout2d on the batch of that one image)."""
    x = torch.randn(5, 4, 4)
    torch.manual_seed(3)
    y = Dropout2d(0.5)(x)
    torch.manual_seed(3)
    expected = torch.nn.Dropout2d(0.5)(x.unsqueeze(0)).squeeze(0)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("cls", [Dropout, Dropout2d])
def test_bad_probability(cls: type[Dropout]) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        cls(1.5)
    assert repr(cls(0.25)) == repr(getattr(torch.nn, cls.__name__)(0.25))
