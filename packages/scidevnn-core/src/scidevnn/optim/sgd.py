"""SGD: stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

Per parameter, with gradient g (negated when ``maximize``):

    g   <- g + weight_decay * p
    buf <- g                                      on the first step (momentum_buffer)
    buf <- momentum * buf + (1 - dampening) * g   afterwards
    g   <- g + momentum * buf   (nesterov)   or   g <- buf
    p   <- p - lr * g

Operation for operation torch.optim.SGD's single-tensor implementation (the CPU default),
applied to a whole group with ``torch._foreach_*`` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scidevnn.optim.optimizer import Optimizer, ParamsT
from scidevnn.parameter import Parameter


class SGD(Optimizer):
    """SGD with torch's arguments and defaults; state per parameter: ``momentum_buffer``."""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        if group["lr"] < 0.0:
            raise ValueError(f"{name}: invalid learning rate: {group['lr']}")
        if group["momentum"] < 0.0:
            raise ValueError(f"{name}: invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"{name}: invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"{name}: Nesterov momentum requires a momentum > 0 and zero dampening "
                f"(got momentum={group['momentum']}, dampening={group['dampening']})"
            )

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SGD update of every parameter that has a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params, grads = self._with_grad(group)
            if params:
                self._update(group, params, grads)
        return loss

    def _update(self, group: dict[str, Any], params: list[Parameter], grads: list[Tensor]) -> None:
        momentum: float = group["momentum"]
        weight_decay: float = group["weight_decay"]
        data = [p.data for p in params]
        fresh = False  # True once grads are our own tensors rather than the parameters' .grad
        if group["maximize"]:
            grads = list(torch._foreach_neg(grads))
            fresh = True
        if weight_decay != 0:
            if fresh:
                torch._foreach_add_(grads, data, alpha=weight_decay)
            else:
                grads = list(torch._foreach_add(grads, data, alpha=weight_decay))
                fresh = True

        if momentum != 0:
            old: list[Tensor] = []
            old_grads: list[Tensor] = []
            buffers: list[Tensor] = []
            for param, grad in zip(params, grads, strict=True):
                state = self.state.setdefault(param, {})
                buffer = state.get("momentum_buffer")
                if buffer is None:
                    buffer = state["momentum_buffer"] = grad.clone()
                else:
                    old.append(buffer)
                    old_grads.append(grad)
                buffers.append(buffer)
            if old:
                torch._foreach_mul_(old, momentum)
                torch._foreach_add_(old, old_grads, alpha=1 - group["dampening"])
            if not group["nesterov"]:
                grads = buffers
            elif fresh:
                torch._foreach_add_(grads, buffers, alpha=momentum)
            else:
                grads = list(torch._foreach_add(grads, buffers, alpha=momentum))

        torch._foreach_add_(data, grads, alpha=-group["lr"])
