"""Gradient checking for layers with a hand-written backward, for SciDevNN and its plugin authors.

Two independent oracles:

- ``check_layer(layer, reference, inputs)`` runs the layer and a torch reference (usually its
  ``torch.nn`` namesake, given the layer's own weights) on the same inputs and compares the
  outputs, the input gradients the layer's ``backward`` returns, every parameter's ``.grad`` and
  every buffer with what torch autograd computes.
- ``check_finite_differences(layer, inputs)`` compares the layer's backward with central
  differences of ``<forward(x), grad_output>`` in float64: it needs no reference at all.

Helpers for a plugin's own tests:

- ``build_pair(MyConv, torch.nn.Conv2d, 3, 4, 3)`` builds the layer and its torch namesake from
  one seed and checks that the initial weights are torch's, bit for bit.
- ``check_storage_round_trip(layer, inputs)`` saves to HDF5, loads back and checks the copy.
- ``with fresh_registry(): ...`` runs a block against a layer registry rebuilt from the
  installed plugins (or a given one), and drops it afterwards.

This is the one module of SciDevNN that calls torch autograd: it is the oracle the hand-written
backward passes are judged by, never a part of them. Typical use in a plugin's tests::

    layer = MyConv(3, 4, 3).double()
    check_layer(layer, torch.nn.Conv2d(3, 4, 3).double(), torch.randn(2, 3, 8, 8).double())
    check_finite_differences(layer, torch.randn(2, 3, 8, 8).double())
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from scidevnn import plugins
from scidevnn.module import Module, no_grad
from scidevnn.storage import load_model, save_model

ModuleT = TypeVar("ModuleT", bound=Module)
ReferenceT = TypeVar("ReferenceT", bound=torch.nn.Module)

Nested = Any  # a Tensor, None, or a tuple/list of Nested

DEFAULT_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-3}


def flatten(structure: Nested) -> list[Tensor | None]:
    """The tensors (and ``None`` placeholders) of a nested tuple/list, depth first."""
    if isinstance(structure, (tuple, list)):
        return [leaf for item in structure for leaf in flatten(item)]
    if structure is None or isinstance(structure, Tensor):
        return [structure]
    raise TypeError(f"expected tensors, None or tuples of them, got {type(structure).__name__}")


def map_structure(fn: Callable[[Tensor], Any], structure: Nested) -> Nested:
    """Apply ``fn`` to every tensor of a nested tuple/list, keeping the nesting and Nones."""
    if isinstance(structure, (tuple, list)):
        return type(structure)(map_structure(fn, item) for item in structure)
    if structure is None:
        return None
    return fn(structure)


def _tolerance(tensor: Tensor, atol: float | None, rtol: float | None) -> tuple[float, float]:
    default = DEFAULT_TOLERANCE.get(tensor.dtype, 1e-5)
    return (default if atol is None else atol), (default if rtol is None else rtol)


def assert_close(
    actual: Tensor | None,
    expected: Tensor | None,
    what: str,
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Raise an AssertionError naming ``what`` and the worst element when the two differ.

    ``None`` on one side equals an all-zero tensor on the other (torch leaves ``.grad`` None
    where nothing flowed; a hand-written backward may return zeros).
    """
    if actual is None and expected is None:
        return
    if actual is None or expected is None:
        present = actual if actual is not None else expected
        assert present is not None
        if bool((present == 0).all()):
            return
        side = "SciDevNN" if actual is None else "torch"
        raise AssertionError(f"{what}: {side} gives None, the other a non-zero tensor")
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: shape {tuple(actual.shape)} differs from torch's {tuple(expected.shape)}"
        )
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{what}: dtype {actual.dtype} differs from torch's {expected.dtype}")
    a_tol, r_tol = _tolerance(expected, atol, rtol)
    actual_f = actual.detach().to(torch.float64)
    expected_f = expected.detach().to(torch.float64)
    if actual.numel() == 0:
        return
    same_nonfinite = (actual_f == expected_f) | (actual_f.isnan() & expected_f.isnan())
    excess = (actual_f - expected_f).abs() - (a_tol + r_tol * expected_f.abs())
    excess = torch.where(same_nonfinite, torch.zeros_like(excess), excess)
    excess = torch.nan_to_num(excess, nan=float("inf"))
    if bool((excess > 0).any()):
        flat = int(excess.reshape(-1).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), actual.shape))
        diff = (actual_f - expected_f).abs().max().item()
        raise AssertionError(
            f"{what}: differs from torch by up to {diff:.3g} (atol {a_tol:g}, rtol {r_tol:g}); "
            f"worst at index {index}: {actual_f[index].item()!r} vs {expected_f[index].item()!r}"
        )


def assert_close_nested(
    actual: Nested, expected: Nested, what: str, atol: float | None, rtol: float | None
) -> None:
    actual_leaves, expected_leaves = flatten(actual), flatten(expected)
    if len(actual_leaves) != len(expected_leaves):
        raise AssertionError(
            f"{what}: {len(actual_leaves)} tensors where torch gives {len(expected_leaves)}"
        )
    for position, (a, e) in enumerate(zip(actual_leaves, expected_leaves, strict=True)):
        label = what if len(actual_leaves) == 1 else f"{what} [{position}]"
        assert_close(a, e, label, atol, rtol)


def random_like(structure: Nested, generator: torch.Generator | None = None) -> Nested:
    """Standard-normal tensors shaped like every floating tensor of ``structure``."""

    def draw(tensor: Tensor) -> Tensor | None:
        if not tensor.is_floating_point():
            return None
        return torch.randn(
            tensor.shape, dtype=tensor.dtype, device=tensor.device, generator=generator
        )

    return map_structure(draw, structure)


def _as_tuple(inputs: Nested) -> tuple[Any, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def leaf(tensor: Tensor) -> Tensor:
    """A detached copy of ``tensor`` that requires grad (a torch autograd leaf) when it is
    floating point; other tensors are copied as they are."""
    copy = tensor.detach().clone()
    return copy.requires_grad_(True) if copy.is_floating_point() else copy


def build_pair(
    layer_cls: type[ModuleT],
    reference_cls: type[ReferenceT],
    *args: Any,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[ModuleT, ReferenceT]:
    """``(layer_cls(*args, **kwargs), reference_cls(*args, **kwargs))``, each built right after
    ``torch.manual_seed(seed)``.

    Checks that the two state dicts have the same keys in the same order and, key by key, the
    same dtype, shape and values (bit for bit): the layer mirrors its torch namesake's
    parameters, buffers and initialisation. Raises ``AssertionError`` naming the first key that
    differs.
    """
    torch.manual_seed(seed)
    layer = layer_cls(*args, **kwargs)
    torch.manual_seed(seed)
    reference = reference_cls(*args, **kwargs)
    name = layer_cls.__name__
    ours, theirs = layer.state_dict(), reference.state_dict()
    if list(ours) != list(theirs):
        raise AssertionError(
            f"{name}: state_dict keys {list(ours)} differ from torch's {list(theirs)}"
        )
    for key, value in theirs.items():
        mine = ours[key]
        if mine.dtype != value.dtype or mine.shape != value.shape:
            raise AssertionError(
                f"{name} {key}: {mine.dtype} {tuple(mine.shape)} differs from torch's "
                f"{value.dtype} {tuple(value.shape)}"
            )
        if not torch.equal(mine, value):
            raise AssertionError(f"{name} {key}: initialisation differs from torch's")
    return layer, reference


def check_layer(
    layer: Module,
    reference: torch.nn.Module | Callable[..., Any],
    inputs: Nested,
    *,
    grad_output: Nested = None,
    atol: float | None = None,
    rtol: float | None = None,
    check_input_grad: bool = True,
    load_state: bool = True,
) -> Nested:
    """Check ``layer``'s forward and backward against ``reference`` under torch autograd.

    Args:
        layer: the SciDevNN module under test (its ``training`` flag is copied to the reference).
        reference: a ``torch.nn.Module`` (given ``layer.state_dict()`` when ``load_state``) or
            any function of tensors built from differentiable torch operations.
        inputs: a tensor or a tuple of positional inputs, possibly nested (``(x, (h, c))``).
        grad_output: d loss / d output, nested like the output; standard normal if None.
        atol, rtol: tolerances; default 1e-5 in float32 and 1e-10 in float64.
        check_input_grad: compare the returned input gradient(s); set False for a layer
            whose ``needs_input_grad`` is off.

    Returns the layer's output. Raises ``AssertionError`` naming the first tensor that differs:
    output, input gradient, a parameter's gradient (by name) or a buffer (by name).
    """
    name = type(layer).__name__
    args = _as_tuple(inputs)
    if isinstance(reference, torch.nn.Module):
        if load_state:
            reference.load_state_dict(layer.state_dict())
        reference.train(layer.training)
        reference.zero_grad(set_to_none=True)
    layer.zero_grad()

    ours_args = map_structure(lambda t: t.detach().clone(), args)
    ref_args = map_structure(leaf, args)

    output = layer(*ours_args)
    ref_output = reference(*ref_args)
    assert_close_nested(output, ref_output, f"{name} output", atol, rtol)

    if grad_output is None:
        grad_output = random_like(output)
    pairs = [
        (out, grad)
        for out, grad in zip(flatten(ref_output), flatten(grad_output), strict=True)
        if out is not None and grad is not None and out.requires_grad
    ]
    grad_input = layer.backward(grad_output)
    if pairs:
        torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])

    if check_input_grad:
        ours = flatten(grad_input if isinstance(inputs, tuple) else (grad_input,))
        theirs = [t.grad if t is not None and t.requires_grad else None for t in flatten(ref_args)]
        if len(ours) != len(theirs):
            raise AssertionError(
                f"{name}.backward returned {len(ours)} input gradients for {len(theirs)} inputs"
            )
        for position, (a, e) in enumerate(zip(ours, theirs, strict=True)):
            if e is None and flatten(ref_args)[position] is None:
                continue
            label = "input gradient" if len(ours) == 1 else f"input gradient [{position}]"
            assert_close(a, e, f"{name} {label}", atol, rtol)

    if isinstance(reference, torch.nn.Module):
        ref_params = dict(reference.named_parameters())
        for param_name, param in layer.named_parameters():
            if param_name not in ref_params:
                raise AssertionError(f"{name}: torch reference has no parameter '{param_name}'")
            assert_close(
                param.grad, ref_params[param_name].grad, f"{name} {param_name}.grad", atol, rtol
            )
        ref_buffers = dict(reference.named_buffers())
        for buffer_name, buffer in layer.named_buffers():
            if buffer_name in ref_buffers:
                assert_close(
                    buffer, ref_buffers[buffer_name], f"{name} buffer {buffer_name}", atol, rtol
                )
    if layer.pending_backward:
        raise AssertionError(f"{name}: {layer.pending_backward} forward(s) left without backward")
    return output


def _inner(output: Nested, grad_output: Nested) -> float:
    total = 0.0
    for out, grad in zip(flatten(output), flatten(grad_output), strict=True):
        if out is not None and grad is not None:
            total += float((out.to(torch.float64) * grad).sum())
    return total


def check_finite_differences(
    layer: Module,
    inputs: Nested,
    *,
    grad_output: Nested = None,
    eps: float = 1e-6,
    atol: float = 1e-7,
    rtol: float = 1e-5,
    max_entries: int = 64,
    seed: int = 0,
    check_input_grad: bool = True,
) -> None:
    """Compare ``layer``'s backward with central finite differences, in float64.

    For up to ``max_entries`` randomly chosen entries of every floating input and every
    parameter, ``(f(x + eps) - f(x - eps)) / (2 eps)`` with ``f = <forward(x), grad_output>``
    must equal the analytic gradient. Buffers (running statistics) are restored after each
    evaluation. Not meaningful for layers that draw random numbers in forward (dropout).
    """
    name = type(layer).__name__
    args = map_structure(lambda t: t.detach().clone(), _as_tuple(inputs))
    for tensor in [*flatten(args), *(p.data for p in layer.parameters())]:
        if tensor is not None and tensor.is_floating_point() and tensor.dtype != torch.float64:
            raise ValueError(f"check_finite_differences needs float64, got {tensor.dtype}")
    buffers = {key: value.clone() for key, value in layer.named_buffers()}

    def restore_buffers() -> None:
        current = dict(layer.named_buffers())
        for key, value in buffers.items():
            current[key].copy_(value)

    layer.zero_grad()
    output = layer(*args)
    if grad_output is None:
        generator = torch.Generator().manual_seed(seed)
        grad_output = random_like(output, generator)
    grad_input = layer.backward(grad_output)
    restore_buffers()

    def objective() -> float:
        with no_grad():
            value = _inner(layer(*args), grad_output)
        restore_buffers()
        return value

    targets: list[tuple[str, Tensor, Tensor | None]] = []
    if check_input_grad:
        analytic_inputs = flatten(grad_input if isinstance(inputs, tuple) else (grad_input,))
        for position, (tensor, grad) in enumerate(zip(flatten(args), analytic_inputs, strict=True)):
            if tensor is not None and tensor.is_floating_point():
                targets.append((f"input [{position}]", tensor, grad))
    for param_name, param in layer.named_parameters():
        targets.append((f"parameter {param_name}", param.data, param.grad))

    generator = torch.Generator().manual_seed(seed)
    for label, tensor, analytic in targets:
        flat_count = tensor.numel()
        if flat_count == 0:
            continue
        chosen = torch.randperm(flat_count, generator=generator)[:max_entries]
        for flat_index in chosen.tolist():
            unravelled = torch.unravel_index(torch.tensor(flat_index), tensor.shape)
            index = tuple(int(i) for i in unravelled)
            original = tensor[index].item()
            tensor[index] = original + eps
            plus = objective()
            tensor[index] = original - eps
            minus = objective()
            tensor[index] = original
            numeric = (plus - minus) / (2 * eps)
            value = 0.0 if analytic is None else float(analytic[index])
            if abs(value - numeric) > atol + rtol * abs(numeric):
                raise AssertionError(
                    f"{name} {label}: analytic gradient {value!r} at index {index} differs "
                    f"from the finite difference {numeric!r}"
                )


@contextmanager
def fresh_registry(registry: plugins.Registry | None = None) -> Iterator[None]:
    """Run the block with ``registry`` as the process-wide layer registry (None: one rebuilt
    from the installed plugins on first use); afterwards drop it, so the next use rebuilds it.

    For tests that register throw-away plugins or change ``SCIDEVNN_BLOCK_PLUGINS``: as a
    pytest fixture, ``with fresh_registry(): yield``.
    """
    plugins.reset_registry(registry)
    try:
        yield
    finally:
        plugins.reset_registry(None)


def check_storage_round_trip(
    model: Module, inputs: Nested, path: str | os.PathLike[str] | None = None
) -> Module:
    """Save ``model`` to HDF5 at ``path`` (default: a temporary file), load it back and check
    that the copy is the same model.

    Checks the class, ``get_config()``, ``repr``, the state dict (same keys in the same order,
    each tensor with the same dtype and bit-identical) and the outputs on ``inputs`` (a tensor
    or a tuple of positional inputs, possibly nested), bit-identical in eval mode under
    ``no_grad``; each call gets its own copy of the inputs, so in-place layers are fine.
    ``model``'s training mode is restored. Returns the loaded model, in eval mode. Raises
    ``AssertionError`` naming what differs.
    """
    if path is None:
        with tempfile.TemporaryDirectory() as folder:
            return check_storage_round_trip(model, inputs, Path(folder) / "model.h5")
    name = type(model).__name__
    save_model(model, path)
    loaded = load_model(path).eval()
    if type(loaded) is not type(model):
        raise AssertionError(f"{name}: loaded back as {type(loaded).__name__}")
    if loaded.get_config() != model.get_config():
        raise AssertionError(
            f"{name}: configuration {loaded.get_config()} after loading, {model.get_config()} "
            "before"
        )
    if repr(loaded) != repr(model):
        raise AssertionError(f"{name}: repr {loaded!r} after loading, {model!r} before")
    original, restored = model.state_dict(), loaded.state_dict()
    if list(original) != list(restored):
        raise AssertionError(f"{name}: state_dict keys {list(restored)} after loading")
    for key, value in original.items():
        if restored[key].dtype != value.dtype or not torch.equal(restored[key], value):
            raise AssertionError(f"{name} {key}: differs after loading")
    args = _as_tuple(inputs)
    training = model.training
    model.eval()
    try:
        with no_grad():
            before = model(*map_structure(lambda t: t.clone(), args))
            after = loaded(*map_structure(lambda t: t.clone(), args))
    finally:
        model.train(training)
    before_leaves, after_leaves = flatten(before), flatten(after)
    if len(before_leaves) != len(after_leaves):
        raise AssertionError(f"{name}: {len(after_leaves)} outputs after loading")
    for position, (a, b) in enumerate(zip(before_leaves, after_leaves, strict=True)):
        same = a is b if a is None or b is None else torch.equal(a, b)
        if not same:
            raise AssertionError(f"{name}: output [{position}] differs after loading")
    return loaded
