"""CrossEntropyLoss: log-softmax and negative log-likelihood in one numerically stable step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from scidevnn.losses.loss import Loss


class CrossEntropyLoss(Loss):
    """Cross-entropy between logits and class indices or class probabilities, as torch defines it.

    Shapes: prediction x of logits (N, C), (C,) or (N, C, d1, ..., dk); the class dimension is
    the second (the first for (C,)). Target either class indices of x's shape without the class
    dimension ((N,), () or (N, d1, ..., dk); an integer dtype), or class probabilities of x's own
    shape (a floating dtype). 'none' gives one loss per row: (N,), () or (N, d1, ..., dk).

    With logp = log_softmax(x) over the classes, eps = label_smoothing, w = weight (all ones
    when None):

    - class indices y: l_n = (1 - eps) w_{y_n} (-logp_{n,y_n}) + eps/C sum_c w_c (-logp_{n,c}),
      and l_n = 0 where y_n == ignore_index; 'mean' is sum_n l_n / sum_{n not ignored} w_{y_n}.
    - class probabilities t: q = (1 - eps) t + eps/C, l_n = -sum_c w_c q_{n,c} logp_{n,c};
      'mean' is sum_n l_n / (number of rows N d1 ... dk), whatever the weights; ignore_index
      does not apply.

    Backward: both cases read l_n = -sum_c a_{n,c} logp_{n,c} for fixed coefficients a, so
    dL/dx_{n,c} = g_n (softmax(x)_{n,c} sum_k a_{n,k} - a_{n,c}) with g_n = dL/dl_n (divided by
    the mean's denominator for 'mean'); ignored rows get zero.

    ``weight`` (C,) is a buffer, as in torch. Arguments after ``weight`` are keyword-only: torch's
    deprecated ``size_average`` and ``reduce`` sit between them, so a positional call written for
    torch would mean something else here.
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | Sequence[float] | None = None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(
                "CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, "
                f"got {label_smoothing}"
            )
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        if weight is not None:
            if not isinstance(weight, Tensor):
                weight = torch.tensor(weight, dtype=torch.get_default_dtype())
            if weight.dim() != 1 or not weight.is_floating_point():
                raise ValueError(
                    "CrossEntropyLoss: weight must be a 1-D floating tensor of one weight per "
                    f"class, got shape {tuple(weight.shape)} and dtype {weight.dtype}"
                )
        self.register_buffer("weight", weight)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["weight"] = None if self.weight is None else self.weight.tolist()
        return config

    # ----------------------------------------------------------------- forward
    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.dim() == 0:
            raise ValueError("CrossEntropyLoss: prediction needs a class dimension, got shape ()")
        if not isinstance(target, Tensor):
            raise TypeError(f"CrossEntropyLoss: target is a {type(target).__name__}, not a Tensor")
        probabilities = target.shape == prediction.shape
        unbatched = prediction.dim() == 1
        x = prediction.unsqueeze(0) if unbatched else prediction
        if probabilities:
            if not target.is_floating_point():
                raise TypeError(
                    "CrossEntropyLoss: a target of the prediction's shape holds class "
                    f"probabilities and must be floating point, got {target.dtype}"
                )
            target = target.unsqueeze(0) if unbatched else target
        else:
            target = self._index_target(prediction, target)

        n_classes = x.shape[1]
        weight = None
        if self.weight is not None:
            if self.weight.shape != (n_classes,):
                raise ValueError(
                    f"CrossEntropyLoss: weight of shape {tuple(self.weight.shape)} does not fit "
                    f"{n_classes} classes (prediction shape {tuple(prediction.shape)})"
                )
            weight = self.weight.reshape((1, n_classes) + (1,) * (x.dim() - 2))

        # logp = (x - max) - log sum exp(x - max): finite for any finite logits.
        logp = x - x.amax(1, keepdim=True)
        p = logp.exp()
        sum_exp = p.sum(1, keepdim=True)
        p.div_(sum_exp)
        logp.sub_(sum_exp.log_())

        if probabilities:
            return self._probability_loss(logp, p, target, weight, unbatched, prediction.dtype)
        return self._index_loss(logp, p, target, weight, unbatched, prediction.dtype)

    def _index_target(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Check an index target's dtype and shape; return it with a batch dimension."""
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                "CrossEntropyLoss: class-index target must be an integer tensor (or class "
                f"probabilities of the prediction's shape), got {target.dtype} of shape "
                f"{tuple(target.shape)} for prediction {tuple(prediction.shape)}"
            )
        if prediction.dim() == 1:
            expected: tuple[int, ...] = ()
            fits = target.dim() == 0 or target.shape == (1,)
        else:
            expected = (prediction.shape[0], *prediction.shape[2:])
            fits = target.shape == expected
        if not fits:
            raise ValueError(
                f"CrossEntropyLoss: target shape {tuple(target.shape)} fits neither class "
                f"indices {expected} nor class probabilities {tuple(prediction.shape)} "
                f"for prediction shape {tuple(prediction.shape)}"
            )
        return target.reshape(1) if prediction.dim() == 1 else target

    def _index_loss(
        self,
        logp: Tensor,
        p: Tensor,
        target: Tensor,
        weight: Tensor | None,
        unbatched: bool,
        dtype: torch.dtype,
    ) -> Tensor:
        target = target.long()
        n_classes = logp.shape[1]
        eps = self.label_smoothing
        mask = self._kept_rows(target, n_classes)
        index = (target if mask is None else torch.where(mask, target, 0)).unsqueeze(1)
        # Per-row factors are plain numbers when no row is ignored and there is no weight.
        row_weight: Tensor | float = 1.0
        if self.weight is not None:
            row_weight = self.weight[index.squeeze(1)]
            if mask is not None:
                row_weight = torch.where(mask, row_weight, 0.0)
        elif mask is not None:
            row_weight = mask.to(logp.dtype)
        # a_{n,c} = target_coef_n [c == y_n] + uniform_n w_c
        target_coef = row_weight * (1.0 - eps) if eps > 0.0 else row_weight
        loss = _times(logp.gather(1, index).squeeze(1).neg_(), target_coef)
        uniform: Tensor | float = 0.0
        row_sum = target_coef
        if eps > 0.0:
            smooth = -(logp if weight is None else logp * weight).sum(1)
            if mask is not None:
                smooth = torch.where(mask, smooth, 0.0)
            loss = loss + (eps / n_classes) * smooth
            uniform = eps / n_classes if mask is None else mask.to(logp.dtype) * (eps / n_classes)
            total_weight = n_classes if self.weight is None else self.weight.sum()
            row_sum = target_coef + uniform * total_weight

        denominator: Tensor | int | None = None
        if self.reduction == "mean":
            denominator = row_weight.sum() if isinstance(row_weight, Tensor) else target.numel()
        self.save_for_backward(
            "indices",
            p,
            index,
            mask,
            target_coef,
            uniform,
            row_sum,
            weight,
            denominator,
            unbatched,
            dtype,
        )
        return self._reduce(loss, denominator, unbatched)

    def _kept_rows(self, target: Tensor, n_classes: int) -> Tensor | None:
        """Mask of the rows not ignored (None when none can be); checks every class index."""
        if target.numel() == 0:
            return None
        low, high = (int(bound) for bound in torch.aminmax(target))
        in_range = low >= 0 and high < n_classes
        if in_range and not 0 <= self.ignore_index < n_classes:
            return None
        mask = target != self.ignore_index
        if not in_range:
            invalid = mask & ((target < 0) | (target >= n_classes))
            if bool(invalid.any()):
                raise IndexError(
                    f"CrossEntropyLoss: target {int(target[invalid][0])} is out of range for "
                    f"{n_classes} classes (ignore_index={self.ignore_index})"
                )
        return mask

    def _probability_loss(
        self,
        logp: Tensor,
        p: Tensor,
        target: Tensor,
        weight: Tensor | None,
        unbatched: bool,
        dtype: torch.dtype,
    ) -> Tensor:
        eps = self.label_smoothing
        coef = target * (1.0 - eps) + eps / logp.shape[1] if eps > 0.0 else target
        if weight is not None:
            coef = coef * weight
        loss = -(logp * coef).sum(1)
        denominator = loss.numel() if self.reduction == "mean" else None
        self.save_for_backward("probabilities", p, coef, coef.sum(1), denominator, unbatched, dtype)
        return self._reduce(loss, denominator, unbatched)

    def _reduce(self, loss: Tensor, denominator: Tensor | int | None, unbatched: bool) -> Tensor:
        if self.reduction == "none":
            return loss.squeeze(0) if unbatched else loss
        total = loss.sum()
        return total / denominator if denominator is not None else total

    # ----------------------------------------------------------------- backward
    def backward(self, grad_output: Tensor | float | None = None) -> Tensor | None:
        kind, *saved = self.saved_tensors()
        if not self.needs_input_grad:
            return None
        if kind == "probabilities":
            return self._probability_backward(grad_output, *saved)
        return self._index_backward(grad_output, *saved)

    def _loss_grad(
        self,
        grad_output: Tensor | float | None,
        rows: torch.Size,
        denominator: Tensor | int | None,
        unbatched: bool,
        like: Tensor,
    ) -> Tensor:
        """g_n = dL/dl_n, of the per-row loss's shape or 0-dim, with the mean's division."""
        if self.reduction == "none":
            loss_shape = torch.Size() if unbatched else rows
            return self._grad_of_loss(grad_output, loss_shape, like).reshape(rows)
        grad = self._grad_of_loss(grad_output, torch.Size(), like)
        return grad / denominator if denominator is not None else grad

    def _index_backward(
        self,
        grad_output: Tensor | float | None,
        p: Tensor,
        index: Tensor,
        mask: Tensor | None,
        target_coef: Tensor | float,
        uniform: Tensor | float,
        row_sum: Tensor | float,
        weight: Tensor | None,
        denominator: Tensor | int | None,
        unbatched: bool,
        dtype: torch.dtype,
    ) -> Tensor:
        rows = index.shape[:1] + index.shape[2:]
        g = self._loss_grad(grad_output, rows, denominator, unbatched, p)
        if mask is not None:
            # where, not a product: an all-ignored 'mean' divides by 0, and torch gives 0 there
            g = torch.where(mask, g, 0.0)
        grad = p * _per_class(_times(g, row_sum))
        target_part = _per_class(_times(g, target_coef)).neg().to(grad.dtype).expand(index.shape)
        grad.scatter_add_(1, index, target_part)
        if isinstance(uniform, Tensor) or uniform != 0.0:
            smooth = _per_class(g * uniform)
            grad.sub_(smooth if weight is None else smooth * weight)
        return self._input_shape(grad, unbatched, dtype)

    def _probability_backward(
        self,
        grad_output: Tensor | float | None,
        p: Tensor,
        coef: Tensor,
        row_sum: Tensor,
        denominator: int | None,
        unbatched: bool,
        dtype: torch.dtype,
    ) -> Tensor:
        g = self._loss_grad(grad_output, row_sum.shape, denominator, unbatched, p)
        grad = p * _per_class(g * row_sum)
        grad.sub_(coef * _per_class(g))
        return self._input_shape(grad, unbatched, dtype)

    @staticmethod
    def _input_shape(grad: Tensor, unbatched: bool, dtype: torch.dtype) -> Tensor:
        grad = grad.squeeze(0) if unbatched else grad
        return grad.to(dtype)


def _per_class(rows: Tensor) -> Tensor:
    """A per-row factor (N, d1, ...) made to broadcast over the classes; 0-dim stays as is."""
    return rows.unsqueeze(1) if rows.dim() > 0 else rows


def _times(tensor: Tensor, factor: Tensor | float) -> Tensor:
    """``tensor * factor``, skipping the multiplication by a plain 1."""
    if not isinstance(factor, Tensor) and factor == 1.0:
        return tensor
    return tensor * factor
