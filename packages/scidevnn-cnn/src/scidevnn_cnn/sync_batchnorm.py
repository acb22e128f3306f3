"""SyncBatchNorm: batch normalisation whose statistics span every data-parallel worker.

Mirrors ``torch.nn.SyncBatchNorm``. In training, inside a process group of more than one
worker, each worker's per-channel (count, mean, biased variance) are gathered and combined, so
every worker normalises with the statistics of the global batch; the backward all-reduces the
two per-channel sums the input gradient needs. The result equals ``BatchNorm2d`` applied to the
whole batch in one process. Without a process group (or in eval mode) it is ``BatchNorm2d``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from scidevnn.distributed.group import collective_failed
from scidevnn.module import Module
from scidevnn_cnn.batchnorm import BatchNorm2d

#: First item of the entries this class saves itself (BatchNorm2d's entries have no marker).
_OWN_ENTRY = object()


def _group_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class SyncBatchNorm(BatchNorm2d):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` with mean and var over all workers.

    Shapes: x (N, C, *) -> y of the same shape, with N the worker's own batch; ``weight``,
    ``bias``, ``running_mean``, ``running_var`` (C,); the arguments, parameters and buffers of
    ``BatchNorm2d`` plus ``process_group`` (default: every worker), which is not saved.

    Forward: from each worker's (n_i, m_i, v_i) per channel, M = sum n_i,
    mean = sum n_i m_i / M, var = sum n_i (v_i + (m_i - mean)^2) / M (stable: no sum of
    squares), x_hat = (x - mean) / sqrt(var + eps). Running statistics use the unbiased
    var * M / (M - 1), as torch does.

    Backward, with g = dL/dy: dL/dweight = sum g x_hat and dL/dbias = sum g over this worker's
    elements (``DistributedDataParallel`` then averages them as any other gradient);
    dL/dx = weight / sqrt(var + eps) * (g - S1 / M - x_hat S2 / M) with S1 = sum g and
    S2 = sum g x_hat all-reduced over the workers.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )
        self.process_group = process_group

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, without the (unsaveable) process group."""
        config = super().get_config()
        config.pop("process_group", None)
        return config

    def _check_input(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"SyncBatchNorm({self.num_features}): expected an input (N, {self.num_features}, "
                f"...), got shape {tuple(x.shape)}"
            )

    def _global_stats(
        self, x: Tensor, dims: list[int], world_size: int
    ) -> tuple[Tensor, Tensor, int]:
        """Mean, biased variance (C,) and element count over the batch of every worker."""
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        count = x.numel() // self.num_features
        if world_size == 1:
            return mean, var, count
        own = torch.cat([mean, var, mean.new_full((1,), float(count))])
        gathered = [torch.empty_like(own) for _ in range(world_size)]
        try:
            dist.all_gather(gathered, own, group=self.process_group)
        except RuntimeError as err:
            raise collective_failed(
                "SyncBatchNorm all_gather of the batch statistics", err
            ) from err
        stats = torch.stack(gathered)  # (W, 2C + 1)
        c = self.num_features
        means, variances, counts = stats[:, :c], stats[:, c : 2 * c], stats[:, 2 * c :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total
        return mean, var, int(total.item())

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        world_size = _group_size(self.process_group) if self.training else 1
        if world_size == 1 and x.dim() == 4:
            return super().forward(x)  # exactly BatchNorm2d (its own saved entry)
        dims = [0, *range(2, x.dim())]
        shape = (1, self.num_features) + (1,) * (x.dim() - 2)
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats:
            mean, var, count = self._global_stats(x, dims, world_size)
            if self.training and count <= 1:
                raise ValueError(
                    "SyncBatchNorm: expected more than 1 value per channel when training, got "
                    f"input size {x.shape}"
                )
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
        else:
            assert self.running_mean is not None and self.running_var is not None
            mean, var, count = self.running_mean, self.running_var, 0
        invstd = torch.rsqrt(var + self.eps)
        x_hat = (x - mean.view(shape)) * invstd.view(shape)
        self.save_for_backward(_OWN_ENTRY, x_hat, invstd, count, use_batch_stats, world_size)
        if self.weight is None or self.bias is None:
            return x_hat
        return torch.addcmul(self.bias.data.view(shape), x_hat, self.weight.data.view(shape))

    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        """r = (1 - f) r + f stat with f = momentum, or 1/num_batches_tracked if it is None."""
        assert self.running_mean is not None and self.running_var is not None
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(var * (count / (count - 1)), alpha=factor)

    def backward(self, grad_output: Tensor) -> Tensor | None:
        if not (self._saved and self._saved[-1][0] is _OWN_ENTRY):
            return super().backward(grad_output)
        entry = self.saved_tensors()
        x_hat: Tensor = entry[1]
        invstd: Tensor = entry[2]
        count: int = entry[3]
        use_batch_stats: bool = entry[4]
        world_size: int = entry[5]
        if grad_output.shape != x_hat.shape:
            raise ValueError(
                f"SyncBatchNorm.backward: expected a gradient of shape {tuple(x_hat.shape)}, "
                f"got {tuple(grad_output.shape)}"
            )
        dims = [0, *range(2, x_hat.dim())]
        shape = (1, self.num_features) + (1,) * (x_hat.dim() - 2)
        sum_g = grad_output.sum(dims)
        sum_g_xhat = (grad_output * x_hat).sum(dims)
        if self.weight is not None and self.bias is not None:
            self.weight.accumulate(sum_g_xhat)
            self.bias.accumulate(sum_g)
        if not self.needs_input_grad:
            return None
        scale = invstd if self.weight is None else invstd * self.weight.data
        if not use_batch_stats:  # running statistics are constants
            return grad_output * scale.view(shape)
        if world_size > 1:
            sums = torch.cat([sum_g, sum_g_xhat])
            try:
                dist.all_reduce(sums, group=self.process_group)
            except RuntimeError as err:
                raise collective_failed(
                    "SyncBatchNorm all_reduce of the gradient sums", err
                ) from err
            sum_g, sum_g_xhat = sums.chunk(2)
        mean_g = (sum_g / count).view(shape)
        mean_g_xhat = (sum_g_xhat / count).view(shape)
        return (grad_output - mean_g - x_hat * mean_g_xhat) * scale.view(shape)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """``convert_sync_batchnorm(module, process_group)``: see the module-level function."""
        return convert_sync_batchnorm(module, process_group)


def convert_sync_batchnorm(module: Module, process_group: Any = None) -> Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``SyncBatchNorm`` sharing its state.

    The new layers hold the very same ``Parameter`` objects and buffer tensors, so an optimizer
    built earlier still updates them. Returns ``module`` (or the replacement when ``module``
    itself is a ``BatchNorm2d``). Convert before wrapping in ``DistributedDataParallel``.
    """
    if isinstance(module, BatchNorm2d) and not isinstance(module, SyncBatchNorm):
        converted = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group,
        )
        for name, param in module._parameters.items():
            converted.register_parameter(name, param)
        for name, buffer in module._buffers.items():
            setattr(converted, name, buffer)
        converted.train(module.training)
        converted.needs_input_grad = module.needs_input_grad
        return converted
    for name, child in list(module.named_children()):
        replacement = convert_sync_batchnorm(child, process_group)
        if replacement is not child:
            module.add_module(name, replacement)
    return module
