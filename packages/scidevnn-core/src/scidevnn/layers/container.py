"""Sequential: layers applied one after the other; backward runs them in reverse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, overload

from scidevnn.module import Module, no_grad


class Sequential(Module):
    """Layers in a chain: ``y = f_n(... f_1(x))``.

    ``backward(g)`` runs ``f_1.backward(... f_n.backward(g))``, each layer's backward pairing
    with its own most recent forward. ``needs_input_grad`` is passed down the chain the way
    autograd would: a layer computes its input gradient only when its input depends on a
    parameter or on the Sequential's input that needs a gradient.

    Indexing, slicing, ``len``, iteration and ``append`` behave like ``torch.nn.Sequential``;
    children are named ``"0"``, ``"1"``, ... so parameter names match torch's.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            self.add_module(str(index), layer)

    def forward(self, x: Any) -> Any:
        # As in autograd, a layer needs its input gradient only if something before it has
        # parameters (or the Sequential's own input needs one). Leading layers that need no
        # gradient at all (a Flatten in front of the first Linear) run without saving anything
        # and are skipped by backward.
        needs = self.needs_input_grad
        first_recorded = 0
        for index, layer in enumerate(self._modules.values()):
            has_parameters = next(layer.parameters(), None) is not None
            layer.needs_input_grad = needs
            if needs or has_parameters:
                x = layer(x)
            else:
                first_recorded = index + 1
                with no_grad():
                    x = layer(x)
            needs = needs or has_parameters
        self.save_for_backward(first_recorded)
        return x

    def backward(self, grad_output: Any) -> Any:
        (first_recorded,) = self.saved_tensors()
        grad = grad_output
        for layer in reversed(list(self._modules.values())[first_recorded:]):
            grad = layer.backward(grad)
        return grad if first_recorded == 0 else None

    def append(self, layer: Module) -> Sequential:
        self.add_module(str(len(self._modules)), layer)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @overload
    def __getitem__(self, index: int) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: int | slice) -> Module | Sequential:
        if isinstance(index, slice):
            sliced = Sequential()  # keeps the children's names, as torch does
            for name, layer in list(self._modules.items())[index]:
                sliced.add_module(name, layer)
            return sliced
        layers = list(self._modules.values())
        if not -len(layers) <= index < len(layers):
            raise IndexError(f"index {index} is out of range for Sequential of {len(layers)}")
        return layers[index]

    def get_config(self) -> dict[str, Any]:
        return {}
