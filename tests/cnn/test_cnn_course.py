"""The course interface of the cnn part (SciDevNN.SDmodules.Conv2D, BatchNorm2D, ReLU,
MaxPooling): calling runs forward in training mode, backward(grad_output) takes the output
gradient alone, and get_grad_test() equals torch's weight, bias and input gradients."""

from __future__ import annotations

import pytest
import torch
from cnn_reference import assert_close, leaf

from SciDevNN import SDmodules, SDoptim
from scidevnn.errors import BackwardError


def torch_grads(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    xr = leaf(x)
    module(xr).backward(grad)
    assert xr.grad is not None
    return xr.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel_size", "stride", "padding", "shape"),
    [(1, 6, 5, 1, 2, (4, 1, 12, 12)), (3, 4, 3, 2, 1, (2, 3, 9, 8)), (2, 2, 1, 1, 0, (2, 5, 5))],
)
def test_conv2d(
    dtype: torch.dtype,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    shape: tuple[int, ...],
) -> None:
    W = torch.randn(out_channels, in_channels, kernel_size, kernel_size, dtype=dtype)
    b = torch.randn(out_channels, dtype=dtype)
    module = SDmodules.Conv2D(
        in_channels, out_channels, kernel_size, stride, padding, init={"W": W, "b": b}
    )
    reference = torch.nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding, dtype=dtype
    )
    with torch.no_grad():
        reference.weight.copy_(W)
        reference.bias.copy_(b)
    x = torch.randn(shape, dtype=dtype)
    y = module(x)
    assert_close(y, reference(x).detach(), "output", dtype)
    grad = torch.randn_like(y)
    grad_input = module.backward(grad)
    expected_input = torch_grads(reference, x, grad)
    grads = module.get_grad_test()
    assert set(grads) == {"gradW", "gradB", "gradOut"}
    assert_close(grads["gradW"], reference.weight.grad, "gradW", dtype)
    assert_close(grads["gradB"], reference.bias.grad, "gradB", dtype)
    assert_close(grads["gradOut"], expected_input, "gradOut", dtype)
    assert grad_input is grads["gradOut"]
    W[0] = 100.0  # init is copied, not shared
    assert float(module.W.abs().max()) < 100


def test_conv2d_zero_grad_apply_grad_and_two_argument_backward() -> None:
    torch.manual_seed(0)
    module = SDmodules.Conv2D(2, 3, 3, 1, 1, optimizer=SDoptim.GradientDescend(0.1))
    x = torch.randn(2, 2, 5, 5)
    y = module(x)
    module.backward(torch.ones_like(y))
    first = {k: v.clone() for k, v in module.get_grad_test().items() if v is not None}
    module.backward(x, torch.ones_like(y))  # the core modules' form: gradients accumulate
    assert torch.allclose(module.get_grad_test()["gradW"], 2 * first["gradW"])
    before = module.W.clone()
    module.apply_grad()
    assert torch.allclose(module.W, before - 0.1 * 2 * first["gradW"])
    module.zero_grad()
    assert module.get_grad_test()["gradW"] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_batchnorm2d(dtype: torch.dtype) -> None:
    W, b = torch.rand(3, dtype=dtype) + 0.5, torch.randn(3, dtype=dtype)
    module = SDmodules.BatchNorm2D(3, 1e-3, init={"W": W, "b": b})
    reference = torch.nn.BatchNorm2d(3, 1e-3, dtype=dtype)
    with torch.no_grad():
        reference.weight.copy_(W)
        reference.bias.copy_(b)
    x = torch.randn(4, 3, 5, 5, dtype=dtype) * 2 + 1
    y = module(x)
    grad = torch.randn_like(y)
    module.backward(grad)
    xr = leaf(x)
    expected = reference(xr)  # training mode, like the course's call
    expected.backward(grad)
    assert_close(y, expected.detach(), "output", dtype)
    expected_input = xr.grad
    grads = module.get_grad_test()
    assert_close(grads["gradW"], reference.weight.grad, "gradW", dtype)
    assert_close(grads["gradB"], reference.bias.grad, "gradB", dtype)
    assert_close(grads["gradOut"], expected_input, "gradOut", dtype)
    assert_close(module.bn.running_mean, reference.running_mean, "running_mean", dtype)


def test_relu_and_max_pooling() -> None:
    x = torch.randint(-2, 3, (2, 3, 6, 6)).double()  # ties in the pooling windows
    relu, pool = SDmodules.ReLU(), SDmodules.MaxPooling(2, 2)
    y = pool(relu(x))
    grad = torch.randn_like(y)
    grad_relu = relu.backward(pool.backward(grad))
    expected = torch_grads(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2)), x, grad)
    assert_close(grad_relu, expected, "input gradient", torch.float64)
    assert_close(relu.get_grad_test(), expected, "ReLU get_grad_test", torch.float64)
    expected_pool = torch_grads(torch.nn.MaxPool2d(2, 2), torch.relu(x), grad)
    assert_close(pool.get_grad_test(), expected_pool, "MaxPooling get_grad_test", torch.float64)
    overlapping = SDmodules.MaxPooling(3, 1)
    z = overlapping(x)
    g = torch.randn_like(z)
    assert_close(overlapping.backward(g), torch_grads(torch.nn.MaxPool2d(3, 1), x, g),
                 "overlapping windows", torch.float64)  # fmt: skip


def test_backward_before_forward_is_a_clear_error() -> None:
    with pytest.raises(BackwardError, match="call the module on an input first"):
        SDmodules.ReLU().backward(torch.ones(2, 2))


def test_wrong_init_shape() -> None:
    with pytest.raises(ValueError, match=r"init\['W'\] must have shape \(4, 3, 3, 3\)"):
        SDmodules.Conv2D(3, 4, 3, 1, 0, init={"W": torch.randn(4, 3, 2, 2)})
