"""Base classes of the course interface: thin wrappers that give a core layer the course's API.

The course's conventions, which these classes implement once for every course module:

- ``module(*inputs)`` runs the forward pass and keeps nothing for backward.
- ``module.backward(*inputs, grad_output)`` is handed the inputs again; it computes the input
  gradient and *adds* the parameter gradients into the core layer's ``Parameter.grad`` (as
  torch accumulates), and returns the input gradient.
- ``module.get_grad_test()`` returns the gradients of the last backward, in the course's layout.
- ``module.zero_grad()`` clears them; ``module.apply_grad()`` takes one step of the module's
  optimizer (an ``SDbase.Optimizer``) on every parameter that has a gradient.

A course class is a few lines: build the core layer, hand it to ``Module.__init__``, and convert
``init`` and the gradients between the course's layout and torch's (see
``SciDevNN.course_core.Linear``). Plugins register their course classes through the
``register_course_modules`` hook; they then appear as ``SciDevNN.SDmodules.<Name>``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

import scidevnn
from scidevnn.errors import SciDevNNError
from scidevnn.parameter import Parameter

#: ``init`` key -> (core parameter name, map from the course's layout to torch's or None,
#: the shape the course gives).
InitLayout = Mapping[str, tuple[str, Callable[[Tensor], Tensor] | None, tuple[int, ...]]]


def init_dtype(init: Mapping[str, Any] | None) -> torch.dtype | None:
    """The dtype of the first floating-point tensor in ``init``: the layer is built in it."""
    for value in (init or {}).values():
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.dtype
    return None


class Module:
    """A course module wrapping one core layer, ``self.layer``.

    ``optimizer`` (an ``SDbase.Optimizer``) is a template: every parameter gets its own
    ``copy.deepcopy`` of it, so a stateful optimizer such as Adam keeps separate moments for
    each parameter; the object passed in is never stepped itself.
    """

    def __init__(self, layer: scidevnn.Module, optimizer: Optimizer | None = None) -> None:
        self.layer = layer
        self.grad_input: Any = None
        self.optimizer: Optimizer | None = None
        self._optimizers: dict[str, Optimizer] = {}
        self.set_optimizer(optimizer)

    def set_optimizer(self, optimizer: Optimizer | None) -> None:
        """Use ``optimizer`` (one deep copy per parameter) for ``apply_grad``."""
        self.optimizer = optimizer
        self._optimizers = (
            {}
            if optimizer is None
            else {name: copy.deepcopy(optimizer) for name, _ in self.layer.named_parameters()}
        )

    def load_init(self, init: Mapping[str, Any] | None, layout: InitLayout) -> None:
        """Copy the course's ``init`` tensors into the core layer's parameters.

        ``layout`` gives, for each allowed key, the parameter it sets, the map from the course's
        layout to torch's (e.g. a transpose; None when they agree) and the course's shape.
        Keys may be left out (the parameter keeps its random initialisation); unknown keys and
        wrong shapes are errors. The tensors are copied, never shared with the caller.
        """
        if init is None:
            return
        name = type(self).__name__
        unknown = sorted(set(init) - set(layout))
        if unknown:
            raise ValueError(f"{name}: unknown init keys {unknown}; expected {sorted(layout)}")
        params = dict(self.layer.named_parameters())
        for key, value in init.items():
            param_name, to_torch, course_shape = layout[key]
            param = params.get(param_name)
            if param is None:
                raise ValueError(f"{name}: init['{key}'] given but the layer has no {param_name}")
            tensor = torch.as_tensor(value).detach()
            if tuple(tensor.shape) != tuple(course_shape):
                raise ValueError(
                    f"{name}: init['{key}'] must have shape {tuple(course_shape)}, "
                    f"got {tuple(tensor.shape)}"
                )
            if to_torch is not None:
                tensor = to_torch(tensor)
            param.data = tensor.to(
                dtype=param.dtype,
                device=param.device,
                memory_format=torch.contiguous_format,
                copy=True,
            )

    def __call__(self, *inputs: Any) -> Any:
        return self.forward(*inputs)

    def check_input(self, *inputs: Any) -> None:
        """Raise a one-line error for inputs the layer cannot take (subclasses override)."""

    def forward(self, *inputs: Any) -> Any:
        """The core layer's output; nothing is kept for backward."""
        self.check_input(*inputs)
        with scidevnn.no_grad():
            return self.layer(*inputs)

    def backward(self, *args: Any) -> Any:
        """``backward(*inputs, grad_output)``: the input gradient; parameter grads accumulate.

        The forward is run again on ``inputs`` (saving what the core backward needs), so the
        gradient is always the one at the inputs given here.
        """
        if len(args) < 2:
            raise TypeError(
                f"{type(self).__name__}.backward(*inputs, grad_output): too few arguments"
            )
        *inputs, grad_output = args
        self.check_input(*inputs)
        self.layer.clear_saved()
        self.layer.needs_input_grad = True
        self.layer(*inputs)
        self.grad_input = self.layer.backward(grad_output)
        return self.grad_input

    def get_grad_test(self) -> Any:
        """The input gradient of the last backward (modules with parameters return a dict)."""
        return self.grad_input

    def zero_grad(self) -> None:
        """Forget the parameter gradients and the last input gradient."""
        self.layer.zero_grad()
        self.grad_input = None

    def apply_grad(self) -> None:
        """One optimizer step on every parameter that has a gradient (gradients are kept).

        Each parameter's own optimizer copy gets ``step(weights, grad)`` in the core layer's
        (torch's) layout, e.g. Linear's weight as (out, in); the update is element-wise, so the
        layout does not change the result.
        """
        if self.optimizer is None:
            raise SciDevNNError(
                f"{type(self).__name__}.apply_grad(): the module has no optimizer; pass "
                "optimizer=SDoptim.Adam(...) (or GradientDescend) to its constructor"
            )
        for name, param in self.layer.named_parameters():
            if param.grad is None:
                continue
            if name not in self._optimizers:  # a parameter added after set_optimizer
                self._optimizers[name] = copy.deepcopy(self.optimizer)
            updated = self._optimizers[name].step(param.data, param.grad)
            if updated is not param.data:
                param.data.copy_(updated)

    def parameters(self) -> list[Parameter]:
        return list(self.layer.parameters())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"


class Loss:
    """A course loss wrapping a core criterion: ``forward(x, y)``, ``backward(x, y)`` -> dL/dx."""

    def __init__(self, criterion: scidevnn.Loss) -> None:
        self.criterion = criterion
        self.grad_input: Tensor | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.forward(x, y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The loss (mean over the batch, as the torch loss with its default reduction)."""
        with scidevnn.no_grad():
            return self.criterion(x, y)

    def backward(self, x: Tensor, y: Tensor) -> Tensor | None:
        """d loss / d x at (x, y)."""
        self.criterion.clear_saved()
        self.criterion.needs_input_grad = True
        self.criterion(x, y)
        self.grad_input = self.criterion.backward()
        return self.grad_input

    def get_grad_test(self) -> Tensor | None:
        """d loss / d x from the last backward."""
        return self.grad_input

    def zero_grad(self) -> None:
        self.grad_input = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(criterion={self.criterion!r})"


class Optimizer:
    """A course optimizer: ``step(weights, grad)`` returns the updated weights.

    Thin over the core optimizers: subclasses implement ``make_optimizer(param)`` returning a
    ``scidevnn.optim`` optimizer over one parameter; this class keeps that parameter and its
    state between calls, so one course optimizer serves ONE tensor (a module deep-copies its
    template per parameter). The tensors passed in are never modified.
    """

    def __init__(self) -> None:
        self._param: Parameter | None = None
        self._core: scidevnn.Optimizer | None = None

    def make_optimizer(self, param: Parameter) -> scidevnn.Optimizer:
        raise NotImplementedError(f"{type(self).__name__} does not implement make_optimizer()")

    def step(self, weights: Tensor, grad: Tensor) -> Tensor:
        """The weights after one update with ``grad``, as a new tensor."""
        name = type(self).__name__
        if grad.shape != weights.shape:
            raise ValueError(
                f"{name}.step: grad of shape {tuple(grad.shape)} does not match weights of "
                f"shape {tuple(weights.shape)}"
            )
        param, core = self._param, self._core
        if (
            param is None
            or core is None
            or ((param.shape != weights.shape or param.dtype != weights.dtype) and not core.state)
        ):
            param = self._param = Parameter(weights.detach().clone())
            core = self._core = self.make_optimizer(param)
        elif param.shape != weights.shape or param.dtype != weights.dtype:
            raise ValueError(
                f"{name}.step: weights of shape {tuple(weights.shape)} ({weights.dtype}), but "
                f"this optimizer keeps state for a tensor of shape {tuple(param.shape)} "
                f"({param.dtype}); use one optimizer per parameter (copy.deepcopy)"
            )
        else:
            param.data.copy_(weights)
        param.grad = grad.detach()
        try:
            core.step()
        finally:
            param.grad = None
        return param.data.clone()

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"
