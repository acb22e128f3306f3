"""Optimizer: the base class of SGD, Adam and AdamW, with torch.optim's groups and state layout.

An optimizer holds ``param_groups`` (a list of dicts: ``'params'`` plus that group's
hyperparameters) and ``state`` (per-parameter tensors such as Adam's moments, keyed by the
``Parameter`` object). ``state_dict()`` packs both exactly as ``torch.optim`` does::

    {'state': {0: {'step': tensor(3.), 'exp_avg': ..., 'exp_avg_sq': ...}, ...},
     'param_groups': [{'lr': 0.001, 'betas': (0.9, 0.999), ..., 'params': [0, 1, 2]}]}

where parameters are numbered in group order, so a torch optimizer's ``state_dict()`` loads into
ours (and ours into torch's) when both hold the same state keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from torch import Tensor

from scidevnn.errors import StateDictError
from scidevnn.parameter import Parameter

#: What an optimizer accepts: parameters, ``(name, parameter)`` pairs (``named_parameters()``)
#: or param-group dicts ``{'params': [...], 'lr': ...}`` overriding the defaults.
ParamsT: TypeAlias = (
    Iterable[Parameter] | Iterable[tuple[str, Parameter]] | Iterable[dict[str, Any]]
)


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and state dicts.

    Subclasses pass their hyperparameter ``defaults`` to ``__init__`` and implement ``step()``.
    Parameters whose ``.grad`` is ``None`` are skipped by ``step()``, as in torch.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults: dict[str, Any] = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        if isinstance(params, Parameter | Tensor | set):
            raise TypeError(
                f"{type(self).__name__} takes an ordered iterable of parameters or of "
                f"param-group dicts, got a {type(params).__name__}"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            if not isinstance(group, dict):
                raise TypeError(
                    f"{type(self).__name__}: mix of parameters and param-group dicts; "
                    "pass either parameters or dicts with a 'params' key"
                )
            self.add_param_group(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters; hyperparameters missing from it take the defaults."""
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{type(self).__name__}: a param group must be a dict with 'params'")
        group = dict(param_group)
        raw = group["params"]
        if isinstance(raw, Parameter):
            raw = [raw]
        elif isinstance(raw, set):
            raise TypeError(
                f"{type(self).__name__}: parameters must be in an ordered collection, not a set"
            )
        items = list(raw)
        names = [item[0] for item in items if isinstance(item, tuple)]
        params = [item[1] if isinstance(item, tuple) else item for item in items]
        if names and len(names) != len(params):
            raise ValueError(f"{type(self).__name__}: give every parameter a name, or none of them")
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"{type(self).__name__} optimizes scidevnn.Parameter objects, "
                    f"got {type(param).__name__}"
                )
        group["params"] = params
        if names:
            group["param_names"] = names
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_group(group)
        seen = {id(p) for other in self.param_groups for p in other["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(
                f"{type(self).__name__}: a parameter appears twice (in one group or in two)"
            )
        self.param_groups.append(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate one group's hyperparameters (subclasses raise ``ValueError``)."""

    # ----------------------------------------------------------------- stepping
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (``set_to_none``), or fill the existing ones with zeros."""
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()

    def _with_grad(self, group: dict[str, Any]) -> tuple[list[Parameter], list[Tensor]]:
        """The group's parameters that have a gradient, and those gradients."""
        params = [p for p in group["params"] if p.grad is not None]
        return params, [p.grad for p in params if p.grad is not None]

    # ----------------------------------------------------------------- state dicts
    def state_dict(self) -> dict[str, Any]:
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}``.

        As in torch, the state tensors are the live ones, not copies: deep-copy the result to
        keep a snapshot while training goes on.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            for param in group["params"]:
                index.setdefault(id(param), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(param)]: dict(values) for param, values in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict from ``state_dict()`` here or from the same ``torch.optim`` class.

        Groups are matched by position and parameters by position within them; the state
        tensors are copied (cast to each parameter's dtype and device, except ``step``).
        Hyperparameters this optimizer does not know (torch's ``foreach``, ``fused``...) are
        ignored.
        """
        name = type(self).__name__
        saved_groups = state_dict.get("param_groups")
        saved_state = state_dict.get("state")
        if not isinstance(saved_groups, list) or not isinstance(saved_state, Mapping):
            raise StateDictError(
                f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'"
            )
        if len(saved_groups) != len(self.param_groups):
            raise StateDictError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter "
                f"groups, this optimizer has {len(self.param_groups)}"
            )
        id_map: dict[Any, Parameter] = {}
        for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise StateDictError(
                    f"{name}.load_state_dict: parameter group {number} holds "
                    f"{len(saved['params'])} parameters in the state dict, "
                    f"{len(group['params'])} here"
                )
            id_map.update(zip(saved["params"], group["params"], strict=True))
        state: dict[Parameter, dict[str, Any]] = {}
        for key, values in saved_state.items():
            param = id_map.get(key)
            if param is None:
                continue
            state[param] = {k: self._cast_state(param, k, v, key) for k, v in dict(values).items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            new_group = {k: group[k] for k in group if k != "params"}
            for key, value in saved.items():
                if key in self.defaults or key == "param_names":
                    keep_list = key == "param_names" or not isinstance(value, list)
                    new_group[key] = value if keep_list else tuple(value)
            new_group["params"] = group["params"]
            self._check_group(new_group)
            new_groups.append(new_group)
        self.param_groups = new_groups
        self.state = state

    @staticmethod
    def _cast_state(param: Parameter, key: str, value: Any, index: Any) -> Any:
        """A private copy of one saved state value, on the parameter's device and dtype."""
        if not isinstance(value, Tensor):
            return value
        if key == "step":
            return value.detach().clone()
        if value.shape != param.shape:
            raise StateDictError(
                f"load_state_dict: state '{key}' of parameter {index} has shape "
                f"{tuple(value.shape)}, the parameter has shape {tuple(param.shape)}"
            )
        dtype = param.dtype if param.data.is_floating_point() else value.dtype
        return value.detach().to(device=param.device, dtype=dtype, copy=True)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {number}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        lines.append(")")
        return "\n".join(lines)
