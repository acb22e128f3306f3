"""Sequential: layers applied one after the other; backward runs them in reverse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, overload

from scidevnn.module import Module


class Sequential(Module):
    """Layers in a chain: ``y = f_n(... f_1(x))``.

    ``backward(g)`` runs ``f_1.backward(... f_n.backward(g))``, each layer's backward pairing
    with its own most recent forward.

    Indexing, slicing, ``len``, iteration and ``append`` behave like ``torch.nn.Sequential``;
    children are named ``"0"``, ``"1"``, ... so parameter names match torch's.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            self.add_module(str(index), layer)

    def forward(self, x: Any) -> Any:
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_output: Any) -> Any:
        layers = list(self._modules.values())
        if layers:
            layers[0].needs_input_grad = self.needs_input_grad
        grad = grad_output
        for layer in reversed(layers):
            grad = layer.backward(grad)
        return grad

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
