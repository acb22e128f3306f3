"""Module: the base class of every layer, with an explicit, hand-written backward.

A module's ``forward`` computes its output and pushes what its ``backward`` will need onto a
stack of saved tensors; ``backward(grad_output)`` pops the most recent entry, adds the
parameter gradients into each ``Parameter.grad`` and returns the gradient with respect to the
input(s). A module may therefore run forward several times (weight sharing, the time steps of a
recurrent cell) before the matching backward calls come, in reverse order.

Registration of parameters, buffers and sub-modules by attribute assignment, parameter names,
``state_dict`` keys and their order follow ``torch.nn.Module``.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from scidevnn.errors import BackwardError, StateDictError
from scidevnn.parameter import Parameter

_grad_enabled = True

M = TypeVar("M", bound="Module")


@contextmanager
def no_grad() -> Iterator[None]:
    """Forward calls inside this block save nothing for backward (inference: no memory growth)."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    """True when forward calls save tensors for a later backward."""
    return _grad_enabled


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def _record_config(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``__init__`` so the outermost call records the constructor arguments."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: Module, *args: Any, **kwargs: Any) -> None:
        if "_config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = {
                name: value
                for name, value in list(bound.arguments.items())[1:]
                if signature.parameters[name].kind
                not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            }
            object.__setattr__(self, "_config", config)
        init(self, *args, **kwargs)

    return wrapped


class Module:
    """Base class of every SciDevNN layer.

    Subclasses implement ``forward(*inputs)`` and ``backward(grad_output)``. In ``forward`` they
    call ``self.save_for_backward(...)``; in ``backward`` they call ``self.saved_tensors()``,
    which pops the entry of the most recent forward not yet consumed.

    ``needs_input_grad`` (default True) may be set to False on a module whose input is data:
    its backward then skips the input gradient and returns ``None``, as autograd does for a
    tensor that does not require grad. ``Sequential`` passes its own flag on to its first layer.
    """

    training: bool
    needs_input_grad: bool
    _config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_config(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_saved", [])
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "needs_input_grad", True)
        if "_config" not in self.__dict__:
            object.__setattr__(self, "_config", {})

    # ----------------------------------------------------------------- registration
    _parameters: OrderedDict[str, Parameter | None]
    _buffers: OrderedDict[str, Tensor | None]
    _non_persistent: set[str]
    _modules: OrderedDict[str, Module]
    _saved: list[Any]

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign '{name}' before {type(self).__name__}.__init__() called "
                "Module.__init__()"
            )
        if isinstance(value, Parameter):
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter '{name}'")
            self._parameters[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer '{name}'")
            self._buffers[name] = value
        elif name in self._modules and value is None:
            del self._modules[name]
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a ``None`` placeholder, as torch does for ``bias=False``)."""
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: state that is saved and moved with the module but not learned."""
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    # ----------------------------------------------------------------- forward / backward
    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.forward(*inputs, **kwargs)

    def save_for_backward(self, *items: Any) -> None:
        """Push what backward will need; nothing is kept inside ``no_grad()``."""
        if _grad_enabled:
            self._saved.append(items)

    def saved_tensors(self) -> tuple[Any, ...]:
        """Pop the items saved by the most recent forward whose backward has not run."""
        if not self._saved:
            raise BackwardError(
                f"{type(self).__name__}.backward() called with no pending forward "
                "(every forward has been consumed, or it ran inside no_grad())"
            )
        items: tuple[Any, ...] = self._saved.pop()
        return items

    @property
    def pending_backward(self) -> int:
        """How many forward calls still wait for their backward."""
        return len(self._saved)

    def clear_saved(self) -> None:
        """Forget every pending forward, in this module and all sub-modules."""
        for module in self.modules():
            module._saved.clear()

    # ----------------------------------------------------------------- traversal
    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
            ]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_prefix, module in modules:
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), buffer

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self: M, fn: Callable[[Module], None]) -> M:
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ----------------------------------------------------------------- state
    def _own_state(self) -> Iterator[tuple[str, Tensor]]:
        """This module's own (non-recursive) parameters, then persistent buffers."""
        for name, param in self._parameters.items():
            if param is not None:
                yield name, param.data
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent:
                yield name, buffer

    def state_dict(self, prefix: str = "") -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name, in torch's order."""
        state: OrderedDict[str, Tensor] = OrderedDict()
        for name, tensor in self._own_state():
            state[prefix + name] = tensor
        for name, child in self._modules.items():
            state.update(child.state_dict(prefix=f"{prefix}{name}."))
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, Tensor], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy values in place; with ``strict`` any missing or unexpected key is an error."""
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        if strict and (missing or unexpected):
            raise StateDictError(
                f"error loading state_dict into {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key].detach()
            if value.shape != target.shape:
                raise StateDictError(
                    f"size mismatch for {key}: copying a tensor of shape {tuple(value.shape)}, "
                    f"the shape in {type(self).__name__} is {tuple(target.shape)}"
                )
            target.copy_(value)
        return IncompatibleKeys(missing, unexpected)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this module (recorded at construction)."""
        return {k: v for k, v in self._config.items() if k not in ("device", "dtype")}

    # ----------------------------------------------------------------- modes
    def train(self: M, mode: bool = True) -> M:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self: M) -> M:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    def to(
        self: M, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> M:
        """Move floating-point parameters and buffers; integer buffers keep their dtype."""

        def convert(tensor: Tensor) -> Tensor:
            target = dtype if dtype is not None and tensor.is_floating_point() else None
            return tensor.to(device=device, dtype=target)

        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = convert(param.data)
                    if param.grad is not None:
                        param.grad = convert(param.grad)
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    setattr(module, name, convert(buffer))
            module._saved.clear()
        return self

    def double(self: M) -> M:
        return self.to(dtype=torch.float64)

    def float(self: M) -> M:
        return self.to(dtype=torch.float32)

    # ----------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
