"""The course interface of the convolutional part: ``SciDevNN.SDmodules.Conv2D``,
``BatchNorm2D``, ``ReLU`` and ``MaxPooling``, thin wrappers (``SciDevNN.SDbase``) over this
plugin's layers, registered through the ``register_course_modules`` hook.

Their convention differs from the course's core modules in one point, as the course had it for
this part: calling a module runs the forward pass in training mode *and keeps* what backward
needs, so ``backward(grad_output)`` takes the output gradient alone. (``backward(x,
grad_output)``, the core modules' form, also works: it runs the forward on ``x`` again.)
``get_grad_test()`` returns ``{'gradW', 'gradB', 'gradOut'}`` for the modules with parameters,
equal to torch's ``weight.grad``, ``bias.grad`` and the input's ``.grad``, and the input
gradient itself for ReLU and MaxPooling. Parameter gradients accumulate over backward calls,
as torch's do, until ``zero_grad()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from SciDevNN import SDbase
from scidevnn.errors import BackwardError
from scidevnn_cnn._args import IntOrPair
from scidevnn_cnn.batchnorm import BatchNorm2d
from scidevnn_cnn.conv2d import Conv2d
from scidevnn_cnn.pooling import MaxPool2d
from scidevnn_cnn.relu import ReLU as _ReLU


class _KeepsForward(SDbase.Module):
    """Course module whose call keeps its forward for ``backward(grad_output)``."""

    def check_input(self, *inputs: Any) -> None:
        if len(inputs) != 1 or not isinstance(inputs[0], Tensor):
            raise TypeError(f"{type(self).__name__}: expected one tensor input")

    def forward(self, *inputs: Any) -> Any:
        """The layer's output in training mode; what backward needs is kept (last call only)."""
        self.check_input(*inputs)
        self.layer.clear_saved()
        self.layer.train()
        self.layer.needs_input_grad = True
        return self.layer(*inputs)

    def backward(self, *args: Any) -> Any:
        """``backward(grad_output)`` after a call, or ``backward(x, grad_output)``."""
        if len(args) != 1:
            return super().backward(*args)
        if self.layer.pending_backward == 0:
            raise BackwardError(
                f"{type(self).__name__}.backward(grad_output): call the module on an input "
                "first (or pass it: backward(x, grad_output))"
            )
        self.grad_input = self.layer.backward(args[0])
        return self.grad_input


class _WithParameters(_KeepsForward):
    """``get_grad_test()`` as a dict: the weight, bias and input gradients of torch."""

    def get_grad_test(self) -> dict[str, Tensor | None]:
        weight = getattr(self.layer, "weight", None)
        bias = getattr(self.layer, "bias", None)
        grads: dict[str, Tensor | None] = {"gradW": None if weight is None else weight.grad}
        if bias is not None:
            grads["gradB"] = bias.grad
        grads["gradOut"] = self.grad_input
        return grads


class Conv2D(_WithParameters):
    """``Conv2d(in_channels, out_channels, kernel_size, stride, padding)`` with
    ``init={'W': (out, in, k, k), 'b': (out,)}`` (torch's layout; copied, and the layer takes
    W's dtype). Input (N, C, H, W) or (C, H, W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair | str = 0,
        bias: bool = True,
        init: Mapping[str, Any] | None = None,
        optimizer: SDbase.Optimizer | None = None,
    ) -> None:
        layer = Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=bias,
            dtype=SDbase.init_dtype(init),
        )
        super().__init__(layer, optimizer)
        self.conv = layer
        self.load_init(
            init,
            {
                "W": ("weight", None, tuple(layer.weight.shape)),
                "b": ("bias", None, (out_channels,)),
            },
        )

    @property
    def W(self) -> Tensor:  # noqa: N802 - the course's name
        return self.conv.weight.data

    @property
    def b(self) -> Tensor | None:
        return None if self.conv.bias is None else self.conv.bias.data


class BatchNorm2D(_WithParameters):
    """``BatchNorm2d(num_channels, eps)`` with ``init={'W': (C,), 'b': (C,)}`` (the scale and
    shift). Calling it normalises with the batch statistics (training mode) and updates the
    running ones; input (N, C, H, W)."""

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        init: Mapping[str, Any] | None = None,
        optimizer: SDbase.Optimizer | None = None,
    ) -> None:
        layer = BatchNorm2d(num_channels, eps, momentum, dtype=SDbase.init_dtype(init))
        super().__init__(layer, optimizer)
        self.bn = layer
        self.load_init(
            init,
            {"W": ("weight", None, (num_channels,)), "b": ("bias", None, (num_channels,))},
        )

    @property
    def W(self) -> Tensor:  # noqa: N802 - the course's name
        assert self.bn.weight is not None
        return self.bn.weight.data

    @property
    def b(self) -> Tensor:
        assert self.bn.bias is not None
        return self.bn.bias.data


class ReLU(_KeepsForward):
    """``max(x, 0)``; ``get_grad_test()`` returns the input gradient of the last backward."""

    def __init__(self) -> None:
        super().__init__(_ReLU())


class MaxPooling(_KeepsForward):
    """``MaxPool2d(kernel_size, stride)`` (stride defaults to the kernel size); ties send the
    gradient where torch does. ``get_grad_test()`` returns the input gradient."""

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None) -> None:
        super().__init__(MaxPool2d(kernel_size, stride))
