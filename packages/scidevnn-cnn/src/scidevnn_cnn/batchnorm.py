"""BatchNorm2d: per-channel normalisation with batch statistics (training) or running ones."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scidevnn.module import Module
from scidevnn.parameter import Parameter
from scidevnn_cnn._args import check_grad_shape

_DIMS = (0, 2, 3)


class BatchNorm2d(Module):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias``, per channel over (N, H, W).

    Arguments, defaults, parameters (``weight``, ``bias``) and buffers (``running_mean``,
    ``running_var``, ``num_batches_tracked`` int64) are ``torch.nn.BatchNorm2d``'s, including
    the keyword-only ``bias`` (False: a learnt scale without shift).
    Shapes: x (N, C, H, W) -> y (N, C, H, W).

    Training (or no running statistics): mean and the biased variance of the batch; the running
    statistics, when tracked, move by ``momentum`` (``None``: the cumulative average, 1/k for
    the k-th batch) towards the batch mean and the *unbiased* batch variance. Evaluation:
    the running statistics. Computed as ``y = x_c * a + bias`` with ``x_c = x - mean`` (kept
    for backward) and ``a = weight / sqrt(var + eps)``.

    Backward, with g = dL/dy, x_c = x - mean, istd = 1/sqrt(var + eps), M = N*H*W and sums over
    (N, H, W): dL/dweight = istd * sum(g x_c), dL/dbias = sum(g);
    with batch statistics dL/dx = weight * istd * (g - sum(g)/M - x_c * istd^2 * sum(g x_c)/M),
    with running ones dL/dx = weight * istd * g.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight: Parameter | None
        self.bias: Parameter | None
        if affine:
            self.weight = Parameter(torch.ones(num_features, **factory))
            if bias:
                self.bias = Parameter(torch.zeros(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.zero_()

    def _check(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 4:
            raise ValueError(
                f"{name}: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}: expected {self.num_features} channels, "
                f"got input of shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        view = (1, -1, 1, 1)
        use_batch = self.training or self.running_mean is None
        if use_batch:
            count = x.numel() // x.shape[1]
            if count <= 1:
                raise ValueError(
                    f"{type(self).__name__}: expected more than 1 value per channel when "
                    f"training, got input size {x.shape}"
                )
            # two passes of plain sums: several times faster than torch.var_mean's Welford
            # reduction over (N, H, W), and as accurate
            mean = x.sum(_DIMS).div_(count)
            centered = x - mean.view(view)
            var = centered.square().sum(_DIMS).div_(count)
            if self.training and self.running_mean is not None:
                self._update_running(mean, var, count)
        else:
            assert self.running_mean is not None and self.running_var is not None
            var = self.running_var
            centered = x - self.running_mean.view(view)
        inv_std = (var + self.eps).rsqrt()
        scale = inv_std if self.weight is None else inv_std * self.weight.data
        y = centered * scale.view(view)
        if self.bias is not None:  # (faster than one broadcasting addcmul)
            y.add_(self.bias.data.view(view))
        self.save_for_backward(centered, inv_std, use_batch)
        return y

    def _update_running(self, mean: Tensor, var: Tensor, count: int) -> None:
        """torch's update: r = (1 - f) r + f * stat, f = momentum or 1/num_batches_tracked."""
        assert self.running_mean is not None and self.running_var is not None
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (count / (count - 1))
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)

    def backward(self, grad_output: Tensor) -> Tensor | None:
        centered: Tensor
        inv_std: Tensor
        centered, inv_std, use_batch = self.saved_tensors()
        check_grad_shape(grad_output, tuple(centered.shape), type(self).__name__)
        g, view = grad_output, (1, -1, 1, 1)
        needs_input = self.needs_input_grad
        grad_sum = dot = None
        if self.weight is not None or (use_batch and needs_input):
            grad_sum = g.sum(_DIMS)
            dot = (g * centered).sum(_DIMS)
        if self.weight is not None:
            assert grad_sum is not None and dot is not None
            self.weight.accumulate(dot * inv_std)
            if self.bias is not None:
                self.bias.accumulate(grad_sum)
        if not needs_input:
            return None
        scale = inv_std if self.weight is None else inv_std * self.weight.data
        if not use_batch:
            return g * scale.view(view)
        assert grad_sum is not None and dot is not None
        count = centered.numel() // centered.shape[1]
        # dx = scale * g - scale * sum(g) / M - centered * (scale * istd^2 * sum(g x_c) / M)
        k = scale * inv_std * inv_std * dot / count
        grad_input = torch.addcmul((-scale * grad_sum / count).view(view), g, scale.view(view))
        return grad_input.addcmul_(centered, k.view(view), value=-1)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )
