"""Core layers against their torch.nn namesakes: forward, input gradient, parameter gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import scidevnn as sd
from scidevnn.testing import check_finite_differences, check_layer

DTYPES = [torch.float32, torch.float64]

# torch warns about Softmax(dim=None); the implicit rule is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:Implicit dimension choice:UserWarning")


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Reproducible random inputs in every test."""
    torch.manual_seed(0)


def randn(*shape: int, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> Tensor:
    return torch.randn(shape, dtype=dtype) * scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("in_features", "out_features", "shape"),
    [(5, 3, (4, 5)), (5, 3, (1, 5)), (7, 2, (7,)), (4, 6, (2, 3, 4)), (16, 1, (8, 16))],
)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(
    dtype: torch.dtype, in_features: int, out_features: int, shape: tuple[int, ...], bias: bool
) -> None:
    layer = sd.Linear(in_features, out_features, bias=bias, dtype=dtype)
    reference = nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
    check_layer(layer, reference, randn(*shape, dtype=dtype))


def test_linear_finite_differences() -> None:
    check_finite_differences(sd.Linear(4, 3).double(), randn(3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 5), (1, 3), (7,), (2, 3, 4, 5), ()])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_sigmoid(dtype: torch.dtype, shape: tuple[int, ...], scale: float) -> None:
    output = check_layer(sd.Sigmoid(), nn.Sigmoid(), randn(*shape, dtype=dtype, scale=scale))
    assert bool(output.isfinite().all())


SOFTMAX_CASES = [
    ((4, 5), 1),
    ((4, 5), 0),
    ((4, 5), -1),
    ((1, 10), 1),
    ((6,), 0),
    ((2, 3, 4), 2),
    ((2, 3, 4, 5), 1),
    ((2, 3, 4, 5), -2),
    ((3, 1), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "dim"), SOFTMAX_CASES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax(dtype: torch.dtype, shape: tuple[int, ...], dim: int, scale: float) -> None:
    x = randn(*shape, dtype=dtype, scale=scale)
    output = check_layer(sd.Softmax(dim), nn.Softmax(dim), x)
    assert bool(output.isfinite().all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "dim"), SOFTMAX_CASES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_log_softmax(dtype: torch.dtype, shape: tuple[int, ...], dim: int, scale: float) -> None:
    x = randn(*shape, dtype=dtype, scale=scale)
    output = check_layer(sd.LogSoftmax(dim), nn.LogSoftmax(dim), x)
    assert bool(output.isfinite().all())


@pytest.mark.parametrize("layer_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)])
def test_softmax_implicit_dim_follows_torch(layer_type: str, shape: tuple[int, ...]) -> None:
    ours = getattr(sd, layer_type)()
    assert ours.dim is None
    check_layer(ours, getattr(nn, layer_type)(), randn(*shape))


@pytest.mark.parametrize("layer_type", ["Softmax", "LogSoftmax"])
def test_softmax_finite_differences(layer_type: str) -> None:
    check_finite_differences(getattr(sd, layer_type)(dim=1), randn(3, 4, 2))


def test_softmax_extreme_logits_are_exact() -> None:
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=torch.float32)
    softmax = sd.Softmax(dim=1)(x)
    log_softmax = sd.LogSoftmax(dim=1)(x)
    torch.testing.assert_close(softmax, torch.softmax(x, 1), atol=0, rtol=0)
    torch.testing.assert_close(log_softmax, torch.log_softmax(x, 1), atol=0, rtol=0)


@pytest.mark.parametrize("layer_type", ["Softmax", "LogSoftmax"])
def test_softmax_empty_input(layer_type: str) -> None:
    x = torch.randn(3, 0)
    output = getattr(sd, layer_type)(dim=1)(x)
    assert output.shape == getattr(nn, layer_type)(dim=1)(x).shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "start_dim", "end_dim"),
    [
        ((2, 3, 4, 5), 1, -1),
        ((1, 3, 4, 5), 1, -1),
        ((2, 3, 4, 5), 0, -1),
        ((2, 3, 4, 5), 1, 2),
        ((2, 3, 4, 5), -3, -2),
        ((4, 5), 1, -1),
        ((6,), 0, -1),
    ],
)
def test_flatten(dtype: torch.dtype, shape: tuple[int, ...], start_dim: int, end_dim: int) -> None:
    layer = sd.Flatten(start_dim, end_dim)
    output = check_layer(layer, nn.Flatten(start_dim, end_dim), randn(*shape, dtype=dtype))
    assert output.shape == nn.Flatten(start_dim, end_dim)(torch.empty(shape)).shape
    assert layer.get_config() == {"start_dim": start_dim, "end_dim": end_dim}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 5), (1, 2, 3), ()])
def test_identity(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    layer = sd.Identity(54, unused_argument=0.1)
    check_layer(layer, nn.Identity(54, unused_argument=0.1), randn(*shape, dtype=dtype))
    assert layer.get_config() == {}
    assert list(layer.state_dict()) == []


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (sd.Sigmoid, nn.Sigmoid),
        (lambda: sd.Softmax(dim=1), lambda: nn.Softmax(dim=1)),
        (lambda: sd.LogSoftmax(dim=1), lambda: nn.LogSoftmax(dim=1)),
        (sd.Flatten, nn.Flatten),
    ],
)
def test_activation_stack_of_two_forwards(ours: type[sd.Module], theirs: type[nn.Module]) -> None:
    """Two forwards, then the two backwards in reverse order: each pairs with its own forward."""
    layer, reference = ours(), theirs()
    xs = [randn(2, 3, 2), randn(2, 3, 2)]
    refs = [x.clone().requires_grad_(True) for x in xs]
    outputs = [reference(r) for r in refs]
    gs = [torch.randn_like(out) for out in outputs]
    torch.autograd.backward(outputs, gs)
    for x in xs:
        layer(x)
    grad_second = layer.backward(gs[1])
    grad_first = layer.backward(gs[0])
    torch.testing.assert_close(grad_first, refs[0].grad, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(grad_second, refs[1].grad, atol=1e-12, rtol=1e-10)


def test_mlp_through_sequential_matches_torch() -> None:
    ours = sd.Sequential(
        sd.Flatten(), sd.Linear(12, 8), sd.Sigmoid(), sd.Linear(8, 5), sd.LogSoftmax(dim=1)
    )
    reference = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 8), nn.Sigmoid(), nn.Linear(8, 5), nn.LogSoftmax(dim=1)
    )
    for dtype in DTYPES:
        check_layer(ours.to(dtype=dtype), reference.to(dtype), randn(3, 3, 4, dtype=dtype))
