"""DistributedDataParallel: one replica per worker, gradients averaged during the backward.

Usage, in every worker (after ``spawn`` or ``init_from_env``)::

    model = DistributedDataParallel(build_model())   # rank 0's weights and buffers everywhere
    for x, y in my_shard:
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())           # grads are now the mean over workers
        optimizer.step(); model.zero_grad()

Overlap: the wrapper runs the model through a *shadow tree*: the same ``Sequential`` structure
(a plain ``Sequential`` and the nested ones are copied as new ``Sequential`` objects) whose leaves
are thin ``_ReportingLeaf`` stand-ins for the model's own layers. The shadow is a real
``Sequential``, so forward and backward follow ``Sequential``'s own rules, whatever they are;
each stand-in runs its layer's forward and backward and then tells the wrapper which layer just
finished, whose parameters' gradients are final once all their uses have run. The
``GradientBuckets`` launch an asynchronous all-reduce as soon as a bucket is complete, while the
earlier layers' backward runs. A model that is not a ``Sequential`` is one leaf (its backward,
then all of its buckets). The model itself is not modified: no hook in ``Module``, nothing that
would stop it from being pickled or saved.

Like torch's DDP: parameters and buffers are broadcast from rank 0 when wrapping; with
``broadcast_buffers`` (the default) rank 0's buffers (BatchNorm's running statistics) are
broadcast again before each training forward, while each worker still normalises with its own
batch's statistics (``SyncBatchNorm`` from the cnn plugin shares those). The ``state_dict`` keys
carry a ``module.`` prefix; save ``wrapper.module`` to get the plain model's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from scidevnn.distributed.buckets import GradientBuckets
from scidevnn.distributed.group import collective_failed, get_world_size
from scidevnn.errors import DistributedError
from scidevnn.layers.container import Sequential
from scidevnn.module import Module, is_grad_enabled
from scidevnn.parameter import Parameter


def broadcast_tensors(tensors: Iterable[Tensor], src: int = 0, group: Any = None) -> None:
    """Overwrite ``tensors`` in place with worker ``src``'s values, one broadcast per dtype."""
    by_kind: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        by_kind.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for same_kind in by_kind.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in same_kind])
        try:
            dist.broadcast(flat, src, group=group)
        except RuntimeError as err:
            raise collective_failed("broadcast", err) from err
        offset = 0
        for tensor in same_kind:
            n = tensor.numel()
            tensor.copy_(flat[offset : offset + n].view_as(tensor))
            offset += n


def broadcast_state(module: Module, src: int = 0, group: Any = None) -> None:
    """Give every worker worker ``src``'s parameters and buffers (no-op without a group)."""
    if get_world_size() > 1:
        tensors = [param.data for param in module.parameters()] + list(module.buffers())
        broadcast_tensors(tensors, src, group)


def check_same_model(module: Module, group: Any = None) -> None:
    """Raise ``DistributedError`` unless every worker holds parameters of the same shapes."""
    world_size = get_world_size()
    if world_size <= 1:
        return
    shapes = [param.shape for param in module.parameters()]
    signature = torch.tensor(
        [
            len(shapes),
            sum(s.numel() for s in shapes),
            sum((i + 1) * (len(s) + 7 * s.numel()) for i, s in enumerate(shapes)),
        ],
        dtype=torch.int64,
    )
    if dist.get_backend(group) == "nccl":
        signature = signature.cuda()
    gathered = [torch.empty_like(signature) for _ in range(world_size)]
    try:
        dist.all_gather(gathered, signature, group=group)
    except RuntimeError as err:
        raise collective_failed("model check", err) from err
    for rank, other in enumerate(gathered):
        if not torch.equal(other, gathered[0]):
            raise DistributedError(
                f"worker {rank} holds a different model than worker 0 "
                f"({int(other[0])} parameters of {int(other[1])} values, against "
                f"{int(gathered[0][0])} of {int(gathered[0][1])}): every worker must build the same"
            )


def _is_plain_sequential(module: Module) -> bool:
    kind = type(module)
    return (
        isinstance(module, Sequential)
        and kind.forward is Sequential.forward
        and kind.backward is Sequential.backward
    )


class _ReportingLeaf(Module):
    """A model layer in the wrapper's shadow tree: its forward, its backward, then a report.

    Passes its ``needs_input_grad`` (set by the shadow ``Sequential``) on to the layer.
    """

    _on_backward: Callable[[Module], None]

    def __init__(self, layer: Module, on_backward: Callable[[Module], None]) -> None:
        super().__init__()
        self.layer = layer
        object.__setattr__(self, "_on_backward", on_backward)

    def forward(self, *inputs: Any) -> Any:
        self.layer.needs_input_grad = self.needs_input_grad
        return self.layer(*inputs)

    def backward(self, grad_output: Any) -> Any:
        self.layer.needs_input_grad = self.needs_input_grad
        grad = self.layer.backward(grad_output)
        self._on_backward(self.layer)
        return grad


def _shadow(module: Module, on_backward: Callable[[Module], None], leaves: list[Module]) -> Module:
    """The shadow tree of ``module``; ``leaves`` receives its layers in forward order."""
    if _is_plain_sequential(module):
        return Sequential(*(_shadow(child, on_backward, leaves) for child in module.children()))
    leaves.append(module)
    return _ReportingLeaf(module, on_backward)


class DistributedDataParallel(Module):
    """Data-parallel wrapper: ``forward`` and ``backward`` of ``module``, gradients averaged.

    Args: ``module`` (the replica; build it identically on every worker), ``bucket_cap_mb``
    (size of the flat all-reduces), ``broadcast_buffers`` (rank 0's buffers before each training
    forward), ``process_group`` (default: the whole world). Without a process group, or with
    one worker, it is a transparent wrapper.

    After ``backward`` every ``Parameter.grad`` of ``module`` holds the mean over the workers of
    their local gradients; when each worker's loss is the mean over its ``B / W`` samples, that
    is the gradient of the mean loss over the global batch of ``B``. Change the model's
    structure (convert_sync_batchnorm, say) before wrapping it, not after.
    """

    def __init__(
        self,
        module: Module,
        bucket_cap_mb: float = 25.0,
        broadcast_buffers: bool = True,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.needs_input_grad = module.needs_input_grad
        self.bucket_cap_mb = bucket_cap_mb
        self.broadcast_buffers = broadcast_buffers
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group) if get_world_size() > 1 else 1
        self._sync = True
        self._reducing = False
        self._leaves: list[Module] = []
        # Not registered as a sub-module: the shadow holds no state of its own.
        object.__setattr__(self, "_shadow", _shadow(module, self._leaf_done, self._leaves))
        self._leaf_params = [list(leaf.parameters()) for leaf in self._leaves]
        self._params_of = {
            id(leaf): params for leaf, params in zip(self._leaves, self._leaf_params, strict=True)
        }
        self._buckets = GradientBuckets(self._ready_order(), bucket_cap_mb, process_group)
        self._use_counts = self._uses()
        self._remaining: dict[int, int] = {}
        if self.world_size > 1:
            check_same_model(module, process_group)
            broadcast_state(module, 0, process_group)

    _shadow: Module

    def _uses(self) -> dict[int, int]:
        """How many leaf backward calls contribute to each parameter's gradient."""
        uses: dict[int, int] = {}
        for params in self._leaf_params:
            for param in params:
                uses[id(param)] = uses.get(id(param), 0) + 1
        return uses

    def _ready_order(self) -> list[Parameter]:
        """Parameters in the order the backward finishes their gradients; any others last."""
        remaining = self._uses()
        order: list[Parameter] = []
        for params in reversed(self._leaf_params):
            for param in params:
                remaining[id(param)] -= 1
                if remaining[id(param)] == 0:
                    order.append(param)
        placed = {id(param) for param in order}
        order.extend(param for param in self.module.parameters() if id(param) not in placed)
        return order

    # ------------------------------------------------------------------ forward / backward
    def forward(self, *inputs: Any) -> Any:
        if self.world_size > 1 and self.broadcast_buffers and self.training and is_grad_enabled():
            buffers = list(self.module.buffers())
            if buffers:
                broadcast_tensors(buffers, 0, self.process_group)
        self._shadow.needs_input_grad = self.needs_input_grad
        return self._shadow(*inputs)

    def backward(self, grad_output: Any) -> Any:
        self._shadow.needs_input_grad = self.needs_input_grad
        if self.world_size <= 1 or not self._sync:
            return self._shadow.backward(grad_output)
        self._buckets.start()
        self._remaining = dict(self._use_counts)
        self._reducing = True
        try:
            grad = self._shadow.backward(grad_output)
        finally:
            self._reducing = False
        self._buckets.finish()
        return grad

    def _leaf_done(self, leaf: Module) -> None:
        """A layer's backward has run: hand the gradients it finished to the buckets."""
        if not self._reducing:
            return
        for param in self._params_of[id(leaf)]:
            self._remaining[id(param)] -= 1
            if self._remaining[id(param)] == 0:
                self._buckets.ready(param)

    def clear_saved(self) -> None:
        """Forget every pending forward, in the model and in the shadow tree."""
        super().clear_saved()
        self._shadow.clear_saved()

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside only accumulate local gradients (gradient accumulation);
        the first backward after the block averages the accumulated sums."""
        previous = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = previous

    def get_config(self) -> dict[str, Any]:
        return {"bucket_cap_mb": self.bucket_cap_mb, "broadcast_buffers": self.broadcast_buffers}

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, buckets={len(self._buckets.buckets)}"
