"""Adam and AdamW: torch.optim's update, operation for operation, in place.

Per parameter, with gradient g (negated when ``maximize``) and step count t:

    g   <- g + weight_decay * p                 (Adam; AdamW instead: p <- p * (1 - lr * wd))
    m   <- lerp(m, g, 1 - beta1)                 exp_avg
    v   <- beta2 * v + (1 - beta2) * g * g       exp_avg_sq (amsgrad: v_max <- max(v_max, v))
    p   <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The operations, their order and where ``eps`` is added are those of torch's single-tensor
implementation (the CPU default), so trajectories agree to the last bit. The whole group is
updated with ``torch._foreach_*`` calls, which perform the same per-tensor operations with less
Python overhead (measured: Adam step on an MLP 784-256-10 about 0.3 ms against 0.38 ms for a
loop over the parameters and 0.53 ms for ``torch.optim.Adam``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from scidevnn.optim.optimizer import Optimizer, ParamsT
from scidevnn.parameter import Parameter


class Adam(Optimizer):
    """Adam (Kingma & Ba), with torch's arguments, defaults, state keys and numerics.

    State per parameter: ``step`` (a float scalar tensor, as torch keeps it), ``exp_avg``,
    ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``. ``decoupled_weight_decay=True``
    is AdamW.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        betas = group["betas"]
        if not group["lr"] >= 0.0:
            raise ValueError(f"{name}: invalid learning rate: {group['lr']}")
        if not group["eps"] >= 0.0:
            raise ValueError(f"{name}: invalid epsilon value: {group['eps']}")
        if len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair, got {betas}")
        for index in (0, 1):
            if not 0.0 <= betas[index] < 1.0:
                raise ValueError(
                    f"{name}: invalid beta parameter at index {index}: {betas[index]} "
                    "(must be in [0, 1))"
                )
        if not group["weight_decay"] >= 0.0:
            raise ValueError(f"{name}: invalid weight_decay value: {group['weight_decay']}")

    def _state(self, param: Parameter, amsgrad: bool) -> dict[str, Any]:
        state = self.state.get(param)
        if state is None:
            data = param.data
            # torch keeps the step count on the CPU, in float64 only when that is the default
            step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else None
            state = {
                "step": torch.zeros((), dtype=step_dtype or torch.float32),
                "exp_avg": torch.zeros_like(data, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(data, memory_format=torch.preserve_format),
            }
            self.state[param] = state
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(
                param.data, memory_format=torch.preserve_format
            )
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam update of every parameter that has a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params, grads = self._with_grad(group)
            if params:
                self._update(group, params, grads)
        return loss

    def _update(self, group: dict[str, Any], params: list[Parameter], grads: list[Tensor]) -> None:
        lr: float = group["lr"]
        beta1, beta2 = group["betas"]
        weight_decay: float = group["weight_decay"]
        amsgrad: bool = group["amsgrad"]
        states = [self._state(p, amsgrad) for p in params]
        data = [p.data for p in params]
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]

        torch._foreach_add_(steps, 1)
        if group["maximize"]:
            grads = list(torch._foreach_neg(grads))
            fresh = True
        else:
            fresh = False  # grads are the parameters' own .grad: never modified
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(data, 1 - lr * weight_decay)
            elif fresh:
                torch._foreach_add_(grads, data, alpha=weight_decay)
            else:
                grads = list(torch._foreach_add(grads, data, alpha=weight_decay))

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

        counts = [float(t.item()) for t in steps]
        if amsgrad:
            max_sqs = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(max_sqs, exp_avg_sqs)
            denom = torch._foreach_sqrt(max_sqs)
        else:
            denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in counts])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(data, exp_avgs, denom, [-(lr / (1 - beta1**t)) for t in counts])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p <- p (1 - lr wd)`` first.

    Same as ``Adam(..., decoupled_weight_decay=True)``; the default ``weight_decay`` is 1e-2.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; the decay stays decoupled whatever the dict says."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
