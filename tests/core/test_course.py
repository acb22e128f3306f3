"""The course's interface (SciDevNN.SDmodules / SDoptim / SDbase) against torch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
import torch

import scidevnn
from SciDevNN import SDbase, SDmodules, SDoptim
from scidevnn import plugins
from scidevnn.errors import SciDevNNError
from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn.plugins import Registry, make_plugin_manager, reset_registry

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def close(ours: Any, theirs: Any) -> None:
    assert isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    tol = TOL[theirs.dtype]
    torch.testing.assert_close(ours, theirs.detach(), atol=tol, rtol=tol)


def torch_linear(W: torch.Tensor, b: torch.Tensor | None) -> torch.nn.Linear:
    layer = torch.nn.Linear(W.shape[0], W.shape[1], bias=b is not None, dtype=W.dtype)
    with torch.no_grad():
        layer.weight.copy_(W.t())
        if b is not None:
            layer.bias.copy_(b)
    return layer


# ----------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(5, 3), (1, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradients(
    x_shape: tuple[int, ...], dtype: torch.dtype, bias: bool
) -> None:
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(3, 4, generator=gen, dtype=dtype)
    b = torch.randn(4, generator=gen, dtype=dtype) if bias else None
    init = {"W": W} if b is None else {"W": W, "b": b}
    ours = SDmodules.Linear(3, 4, bias=bias, init=init)
    theirs = torch_linear(W, b)
    x = torch.randn(x_shape, generator=gen, dtype=dtype)
    x_t = x.clone().requires_grad_()
    y_t = theirs(x_t)
    grad_output = torch.randn(y_t.shape, generator=gen, dtype=dtype)
    y_t.backward(grad_output)

    close(ours(x), y_t)
    grad_in = ours.backward(x, grad_output)
    grads = ours.get_grad_test()
    close(grads["gradW"], theirs.weight.grad)
    assert grads["gradW"] is not None and grads["gradW"].shape == (4, 3)
    close(grads["gradOut"], x_t.grad)
    close(grad_in, x_t.grad)
    if bias:
        close(grads["gradB"], theirs.bias.grad)
    else:
        assert "gradB" not in grads


def test_linear_layout_and_init_is_copied() -> None:
    W = torch.randn(3, 4)
    b = torch.randn(4)
    layer = SDmodules.Linear(3, 4, init={"W": W, "b": b})
    assert layer.W.shape == (3, 4) and torch.equal(layer.W, W)
    assert layer.b is not None and torch.equal(layer.b, b)
    assert layer.linear.weight.shape == (4, 3)
    layer.W.mul_(0)  # the module's weights are its own: the caller's W is untouched
    assert W.abs().sum() > 0
    # float64 init gives a float64 layer
    double = SDmodules.Linear(3, 4, init={"W": W.double()})
    assert double.linear.weight.dtype == torch.float64
    # no init: the random weights still act as y = x W + b
    plain = SDmodules.Linear(6, 2)
    x = torch.randn(5, 6)
    assert plain.b is not None
    close(plain(x), x @ plain.W + plain.b)


def test_linear_gradients_accumulate_like_torch_and_zero_grad() -> None:
    W, b = torch.randn(3, 2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    ours, theirs = SDmodules.Linear(3, 2, init={"W": W, "b": b}), torch_linear(W, b)
    x1, x2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    g1, g2 = torch.randn(4, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    theirs(x1).backward(g1)
    theirs(x2).backward(g2)
    ours.backward(x1, g1)
    ours.backward(x2, g2)
    close(ours.get_grad_test()["gradW"], theirs.weight.grad)
    close(ours.get_grad_test()["gradB"], theirs.bias.grad)
    ours.zero_grad()
    assert ours.get_grad_test() == {"gradW": None, "gradB": None, "gradOut": None}


def test_linear_bad_input_and_init() -> None:
    layer = SDmodules.Linear(3, 4)
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(N, 3\)"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="Linear"):
        layer.backward(torch.randn(2, 2, 3), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match=r"init\['W'\] must have shape \(3, 4\), got \(4, 3\)"):
        SDmodules.Linear(3, 4, init={"W": torch.randn(4, 3)})
    with pytest.raises(ValueError, match="unknown init keys"):
        SDmodules.Linear(3, 4, init={"weight": torch.randn(3, 4)})
    with pytest.raises(ValueError, match="no bias"):
        SDmodules.Linear(3, 4, bias=False, init={"b": torch.randn(4)})
    with pytest.raises(SciDevNNError, match="no optimizer"):
        layer.backward(torch.randn(2, 3), torch.randn(2, 4))
        layer.apply_grad()


@pytest.mark.parametrize(
    ("course_optimizer", "torch_optimizer"),
    [
        (lambda: SDoptim.GradientDescend(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
        (
            lambda: SDoptim.Adam(0.01, (0.8, 0.95)),
            lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95)),
        ),
    ],
    ids=["GradientDescend", "Adam"],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_training_follows_torch(
    course_optimizer: Any, torch_optimizer: Any, dtype: torch.dtype
) -> None:
    """20 steps of forward, loss gradient, backward, apply_grad, zero_grad: torch's trajectory."""
    gen = torch.Generator().manual_seed(2)
    W, b = torch.randn(5, 3, generator=gen, dtype=dtype), torch.randn(3, generator=gen, dtype=dtype)
    template = course_optimizer()
    ours = SDmodules.Linear(5, 3, init={"W": W, "b": b}, optimizer=template)
    loss = SDmodules.MSE()
    theirs = torch_linear(W, b)
    reference = torch_optimizer(list(theirs.parameters()))
    x = torch.randn(16, 5, generator=gen, dtype=dtype)
    target = torch.randn(16, 3, generator=gen, dtype=dtype)
    for _ in range(20):
        y = ours(x)
        ours.backward(x, loss.backward(y, target))
        ours.apply_grad()
        ours.zero_grad()
        reference.zero_grad()
        torch.nn.functional.mse_loss(theirs(x), target).backward()  # type: ignore[no-untyped-call]
        reference.step()
    close(ours.W.t(), theirs.weight)
    assert ours.b is not None
    close(ours.b, theirs.bias)
    assert template._param is None  # the template itself was never stepped


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (4, 5), (1, 5), (2, 3, 4), (2, 3, 2, 2)])
@pytest.mark.parametrize("name", ["Softmax", "Sigmoid"])
def test_activations_match_torch(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    x = 5 * torch.randn(shape, generator=gen, dtype=dtype)
    grad_output = torch.randn(shape, generator=gen, dtype=dtype)
    ours = SDmodules.Softmax() if name == "Softmax" else SDmodules.Sigmoid()
    theirs = torch.nn.Softmax() if name == "Softmax" else torch.nn.Sigmoid()
    x_t = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "implicit dimension choice"
        y_t = theirs(x_t)
    y_t.backward(grad_output)
    close(ours(x), y_t)
    close(ours.backward(x, grad_output), x_t.grad)
    close(ours.get_grad_test(), x_t.grad)
    ours.zero_grad()
    assert ours.get_grad_test() is None


def test_activations_large_inputs() -> None:
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    grad_output = torch.ones(2, 3)
    for ours, theirs in [
        (SDmodules.Softmax(), torch.nn.Softmax(dim=1)),
        (SDmodules.Sigmoid(), torch.nn.Sigmoid()),
    ]:
        x_t = x.clone().requires_grad_()
        y_t = theirs(x_t)
        y_t.backward(grad_output)
        y = ours(x)
        assert torch.isfinite(y).all()
        close(y, y_t)
        close(ours.backward(x, grad_output), x_t.grad)


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 4), (1, 3), (5,)])
def test_mse_matches_torch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    y = torch.randn(shape, generator=gen, dtype=dtype)
    x_t = x.clone().requires_grad_()
    loss_t = torch.nn.MSELoss()(x_t, y)
    loss_t.backward()
    ours = SDmodules.MSE()
    close(ours(x, y), loss_t)
    close(ours.forward(x, y), loss_t)
    close(ours.backward(x, y), x_t.grad)
    close(ours.get_grad_test(), x_t.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5), (1, 3), (4,)])
def test_cross_entropy_matches_torch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    x = 3 * torch.randn(shape, generator=gen, dtype=dtype)
    classes = shape[-1]
    y = torch.randint(classes, shape[:-1], generator=gen)
    x_t = x.clone().requires_grad_()
    loss_t = torch.nn.CrossEntropyLoss()(x_t, y)
    loss_t.backward()
    ours = SDmodules.CrossEntropy()
    close(ours(x, y), loss_t)
    close(ours.backward(x, y), x_t.grad)
    close(ours.get_grad_test(), x_t.grad)


def test_cross_entropy_large_logits() -> None:
    x = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]], dtype=torch.float64)
    y = torch.tensor([1, 2])
    x_t = x.clone().requires_grad_()
    loss_t = torch.nn.CrossEntropyLoss()(x_t, y)
    loss_t.backward()
    ours = SDmodules.CrossEntropy()
    loss = ours(x, y)
    assert torch.isfinite(loss)
    close(loss, loss_t)
    close(ours.backward(x, y), x_t.grad)


# ----------------------------------------------------------------------------- SDoptim
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.7)])
def test_sdoptim_adam_follows_torch_step_after_step(
    betas: tuple[float, float], dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(4, 3, generator=gen, dtype=dtype)
    reference = torch.nn.Parameter(w.clone())
    torch_adam = torch.optim.Adam([reference], lr=0.05, betas=betas)
    assert torch_adam.defaults["eps"] == 1e-8
    adam = SDoptim.Adam(0.05, betas)
    for _ in range(20):
        noise = torch.randn(w.shape, generator=gen, dtype=dtype)
        grad = noise + torch.cos(w)
        reference.grad = noise + torch.cos(reference.detach())
        before = w.clone()
        new_w = adam.step(w, grad)
        assert torch.equal(w, before)  # the tensor passed in is not modified
        w = new_w
        torch_adam.step()
        close(w, reference)


def test_sdoptim_gradient_descend_and_errors() -> None:
    w, g = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    reference = torch.nn.Parameter(w.clone())
    reference.grad = g.clone()
    torch.optim.SGD([reference], lr=0.3).step()
    gd = SDoptim.GradientDescend(0.3)
    close(gd.step(w, g), reference)
    # stateless: the same object may serve tensors of any shape
    close(gd.step(torch.ones(2, 2), torch.ones(2, 2)), torch.full((2, 2), 0.7))

    adam = SDoptim.Adam(0.01, (0.9, 0.99))
    adam.step(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="one optimizer per parameter"):
        adam.step(torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match="does not match"):
        adam.step(torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="betas"):
        SDoptim.Adam(0.01, (0.9, 1.0))
    with pytest.raises(ValueError, match="learning rate"):
        SDoptim.GradientDescend(-1.0)


# ----------------------------------------------------------------------------- plugins
@pytest.fixture
def registry_without_plugins() -> Iterator[None]:
    """Only the core's built-in plugin, as when no plugin package is installed."""
    reset_registry(Registry(make_plugin_manager(load_entry_points=False)))
    try:
        yield
    finally:
        reset_registry(None)


def test_core_course_modules_are_registered(registry_without_plugins: None) -> None:
    table = plugins.get_registry().course_modules
    for name in ["Linear", "Softmax", "Sigmoid", "MSE", "CrossEntropy"]:
        assert table[name].cls is getattr(SDmodules, name)
        assert table[name].distribution == "scidevnn-core"
    assert set(dir(SDmodules)) >= set(table)


def test_missing_plugin_course_module_names_the_package(
    registry_without_plugins: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ImportError, match="Conv2D is provided by the plugin package scidevnn-cnn"):
        SDmodules.Conv2D  # noqa: B018
    with pytest.raises(ImportError, match="scidevnn-rnn"):
        from SciDevNN.SDmodules import LSTMCell  # noqa: F401

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    with pytest.raises(ImportError, match=r"not installed \(pip install scidevnn-cnn\)"):
        SDmodules.MaxPooling  # noqa: B018
    with pytest.raises(AttributeError, match="available: CrossEntropy, Linear"):
        SDmodules.NoSuchModule  # noqa: B018
    assert not hasattr(SDmodules, "NoSuchModule")


class Affine(SDbase.Module):
    """A plugin's course class: y = x A + c with A given as (in, out), like the course's."""

    def __init__(self, size: int, init: dict[str, Any] | None = None, optimizer: Any = None):
        super().__init__(scidevnn.Linear(size, size, dtype=SDbase.init_dtype(init)), optimizer)
        self.load_init(init, {"A": ("weight", torch.t, (size, size)), "c": ("bias", None, (size,))})


class ThrowawayPlugin:
    @hookimpl
    def register_course_modules(self, register: RegisterFn) -> None:
        register(Affine)


def test_plugin_course_module_is_reachable_through_sdmodules() -> None:
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(ThrowawayPlugin(), name="throwaway")
    reset_registry(Registry(manager))
    try:
        from SciDevNN.SDmodules import Affine as Found

        assert Found is Affine
        A, c = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        module = Found(3, init={"A": A, "c": c}, optimizer=SDoptim.Adam(0.1))
        theirs = torch_linear(A, c)
        x, g = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
        close(module(x), theirs(x))
        theirs(x.requires_grad_()).backward(g)
        close(module.backward(x.detach(), g), x.grad)
        module.apply_grad()
        torch.optim.Adam(theirs.parameters(), lr=0.1).step()
        close(dict(module.layer.named_parameters())["weight"].data, theirs.weight)
    finally:
        reset_registry(None)
