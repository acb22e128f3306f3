"""SGD, Adam and AdamW against torch.optim: trajectories, groups, state dicts, argument checks."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

import scidevnn
from scidevnn import SGD, Adam, AdamW, Parameter
from scidevnn.errors import StateDictError

SHAPES = [(4, 3), (3,), (2, 3, 2), ()]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
STEPS = 20

OPTIMIZERS: dict[str, tuple[Any, Any]] = {
    "SGD": (SGD, torch.optim.SGD),
    "Adam": (Adam, torch.optim.Adam),
    "AdamW": (AdamW, torch.optim.AdamW),
}


def make_pair(
    dtype: torch.dtype, seed: int = 0, shapes: list[tuple[int, ...]] = SHAPES
) -> tuple[list[Parameter], list[torch.nn.Parameter]]:
    gen = torch.Generator().manual_seed(seed)
    values = [torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes]
    ours = [Parameter(v.clone()) for v in values]
    theirs = [torch.nn.Parameter(v.clone()) for v in values]
    return ours, theirs


def set_grads(
    ours: list[Parameter], theirs: list[torch.nn.Parameter], step: int, skip: int | None = None
) -> None:
    """The same gradient for both: noise of this step plus a term in the parameter itself.

    The parameter term makes the trajectories feed back, so a small difference would grow.
    Parameter number ``skip`` gets no gradient on every third step (both skip it).
    """
    gen = torch.Generator().manual_seed(1000 + step)
    for index, (p, t) in enumerate(zip(ours, theirs, strict=True)):
        if skip == index and step % 3 == 1:
            p.grad = None
            t.grad = None
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        p.grad = noise + 0.5 * torch.sin(p.data)
        t.grad = noise + 0.5 * torch.sin(t.detach())


def assert_params_close(ours: list[Parameter], theirs: list[torch.nn.Parameter], what: str) -> None:
    for index, (p, t) in enumerate(zip(ours, theirs, strict=True)):
        tol = TOL[p.dtype]
        difference = (p.data - t.detach()).abs().max().item() if p.numel() else 0.0
        assert torch.allclose(p.data, t.detach(), atol=tol, rtol=tol), (
            f"{what}, parameter {index}: differs from torch by {difference:.3g}"
        )


def assert_states_close(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Same state keys and values, same group hyperparameters (where ours has them)."""
    assert set(ours["state"]) == set(theirs["state"])
    for index, state in ours["state"].items():
        assert set(state) == set(theirs["state"][index]), index
        for key, value in state.items():
            expected = theirs["state"][index][key]
            assert value.dtype == expected.dtype, (index, key)
            tol = TOL.get(value.dtype, 1e-5)
            torch.testing.assert_close(value, expected, atol=tol, rtol=tol)
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for group, expected in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        for key, value in group.items():
            assert value == expected[key], key


def run_both(
    make_ours: Callable[[list[Parameter]], scidevnn.Optimizer],
    make_theirs: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    dtype: torch.dtype,
    skip: int | None = None,
) -> tuple[scidevnn.Optimizer, torch.optim.Optimizer]:
    ours, theirs = make_pair(dtype)
    opt, ref = make_ours(ours), make_theirs(theirs)
    for step in range(STEPS):
        set_grads(ours, theirs, step, skip)
        opt.step()
        ref.step()
        assert_params_close(ours, theirs, f"step {step}")
    assert_states_close(opt.state_dict(), ref.state_dict())
    return opt, ref


SGD_OPTIONS = [
    {"momentum": m, "dampening": d, "weight_decay": wd, "nesterov": n, "maximize": mx}
    for m, d, wd, n, mx in itertools.product(
        [0.0, 0.9], [0.0, 0.3], [0.0, 0.1], [False, True], [False, True]
    )
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_sgd_matches_torch(options: dict[str, Any], dtype: torch.dtype) -> None:
    run_both(
        lambda ps: SGD(ps, lr=0.05, **options),
        lambda ps: torch.optim.SGD(ps, lr=0.05, **options),
        dtype,
        skip=1,
    )


ADAM_OPTIONS = [
    {"betas": b, "weight_decay": wd, "amsgrad": a, "maximize": mx}
    for b, wd, a, mx in itertools.product(
        [(0.9, 0.999), (0.5, 0.8)], [0.0, 0.1], [False, True], [False, True]
    )
]


@pytest.mark.parametrize("cls_name", ["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
def test_adam_matches_torch(options: dict[str, Any], dtype: torch.dtype, cls_name: str) -> None:
    ours_cls = {"Adam": Adam, "AdamW": AdamW}[cls_name]
    theirs_cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[cls_name]
    run_both(
        lambda ps: ours_cls(ps, lr=0.02, eps=1e-6, **options),
        lambda ps: theirs_cls(ps, lr=0.02, eps=1e-6, **options),
        dtype,
        skip=2,
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True}),
        ("SGD", {"momentum": 0.9, "dampening": 0.5}),
        ("Adam", {"amsgrad": True, "weight_decay": 0.1}),
        ("Adam", {"maximize": True}),
        ("AdamW", {}),
    ],
    ids=str,
)
def test_bitwise_identical_to_torch(name: str, options: dict[str, Any]) -> None:
    """Same operations in the same order as torch's CPU implementation: not a bit differs.

    (A tolerance cannot see, say, a division replaced by a multiplication by the reciprocal.)
    """
    our_cls, their_cls = OPTIMIZERS[name]
    ours, theirs = make_pair(torch.float32)
    opt, ref = our_cls(ours, lr=0.01, **options), their_cls(theirs, lr=0.01, **options)
    for step in range(STEPS):
        set_grads(ours, theirs, step, skip=0)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs, strict=True):
        assert torch.equal(p.data, t.detach())


def test_defaults_match_torch() -> None:
    ours, theirs = make_pair(torch.float64)
    for our_cls, their_cls in [
        (SGD, torch.optim.SGD),
        (Adam, torch.optim.Adam),
        (AdamW, torch.optim.AdamW),
    ]:
        our_groups = our_cls(ours).state_dict()["param_groups"]
        their_groups = their_cls(theirs).state_dict()["param_groups"]
        for key, value in our_groups[0].items():
            assert value == their_groups[0][key], (our_cls.__name__, key)
    run_both(Adam, torch.optim.Adam, torch.float32)
    run_both(AdamW, torch.optim.AdamW, torch.float32)
    run_both(SGD, torch.optim.SGD, torch.float32)


def test_adam_decoupled_flag_is_adamw() -> None:
    run_both(
        lambda ps: Adam(ps, lr=0.05, weight_decay=0.2, decoupled_weight_decay=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.2),
        torch.float64,
    )


def test_large_gradients_and_float64_default_step_dtype() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ours, theirs = make_pair(torch.float64)
        opt, ref = Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
        for step in range(STEPS):
            for p, t in zip(ours, theirs, strict=True):
                g = torch.full(p.shape, 1e8 * (-1) ** step, dtype=torch.float64)
                p.grad, t.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
        assert_params_close(ours, theirs, "large gradients")
        assert_states_close(opt.state_dict(), ref.state_dict())
    finally:
        torch.set_default_dtype(previous)


def test_param_groups_match_torch() -> None:
    def groups(ps: list[Any]) -> list[dict[str, Any]]:
        return [
            {"params": ps[:2], "lr": 0.1, "momentum": 0.5},
            {"params": ps[2:], "nesterov": True, "weight_decay": 0.01},
        ]

    opt, _ = run_both(
        lambda ps: SGD(groups(ps), lr=0.01, momentum=0.9),
        lambda ps: torch.optim.SGD(groups(ps), lr=0.01, momentum=0.9),
        torch.float64,
    )
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.state_dict()["param_groups"][1]["params"] == [2, 3]

    def adam_groups(ps: list[Any]) -> list[dict[str, Any]]:
        return [{"params": ps[:1], "amsgrad": True, "betas": (0.8, 0.9)}, {"params": ps[1:]}]

    run_both(
        lambda ps: Adam(adam_groups(ps), lr=0.03),
        lambda ps: torch.optim.Adam(adam_groups(ps), lr=0.03),
        torch.float32,
    )


def test_add_param_group_and_changed_lr_match_torch() -> None:
    ours, theirs = make_pair(torch.float64)
    opt = Adam(ours[:2], lr=0.01)
    ref = torch.optim.Adam(theirs[:2], lr=0.01)
    opt.add_param_group({"params": ours[2:], "lr": 0.05})
    ref.add_param_group({"params": theirs[2:], "lr": 0.05})
    for step in range(STEPS):
        if step == 10:  # a scheduler's way of changing the learning rate
            opt.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.002
        set_grads(ours, theirs, step)
        opt.step()
        ref.step()
    assert_params_close(ours, theirs, "after add_param_group")


def test_named_parameters_are_accepted() -> None:
    layer = scidevnn.Linear(3, 2)
    opt = SGD(layer.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    ref = torch.optim.SGD(torch.nn.Linear(3, 2).named_parameters(), lr=0.1)
    assert (
        opt.state_dict()["param_groups"][0]["param_names"]
        == (ref.state_dict()["param_groups"][0]["param_names"])
    )


@pytest.mark.parametrize(
    ("our_cls", "their_cls", "options"),
    [
        (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.2}),
        (Adam, torch.optim.Adam, {"lr": 0.02, "amsgrad": True, "weight_decay": 0.1}),
        (AdamW, torch.optim.AdamW, {"lr": 0.02, "weight_decay": 0.1}),
    ],
    ids=["sgd-nesterov", "sgd-dampening", "adam-amsgrad", "adamw"],
)
def test_state_dict_round_trip_through_torch(
    our_cls: type[scidevnn.Optimizer], their_cls: type[torch.optim.Optimizer], options: Any
) -> None:
    """ours (7 steps) -> torch (7 steps) -> ours (6 steps) == torch for 20 steps straight."""
    dtype = torch.float64
    ours, _ = make_pair(dtype)
    straight_ours, straight = make_pair(dtype)
    reference = their_cls(straight, **options)
    first = our_cls(ours, **options)
    for step in range(7):
        set_grads(ours, straight, step, skip=1)
        first.step()
        reference.step()

    middle_params = [torch.nn.Parameter(p.data.clone()) for p in ours]
    middle = their_cls(middle_params, **options)
    middle.load_state_dict(copy.deepcopy(first.state_dict()))
    for step in range(7, 14):
        set_grads(straight_ours, middle_params, step, skip=1)
        middle.step()
        set_grads(straight_ours, straight, step, skip=1)
        reference.step()

    last_params = [Parameter(t.detach().clone()) for t in middle_params]
    last = our_cls(last_params, **options)
    last.load_state_dict(middle.state_dict())
    for step in range(14, STEPS):
        set_grads(last_params, straight, step, skip=1)
        last.step()
        reference.step()
    assert_params_close(last_params, straight, "after two round trips")
    assert_states_close(last.state_dict(), reference.state_dict())


def test_load_state_dict_copies_and_casts() -> None:
    ours, theirs = make_pair(torch.float32)
    ref = torch.optim.Adam(theirs, lr=0.1)
    for step in range(3):
        set_grads(ours, theirs, step)
        ref.step()
    saved = ref.state_dict()
    opt = Adam(ours, lr=0.5)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.1
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert "foreach" not in opt.param_groups[0]
    for index, param in enumerate(ours):
        state = opt.state[param]
        assert state["exp_avg"].data_ptr() != saved["state"][index]["exp_avg"].data_ptr()
        assert state["step"].data_ptr() != saved["state"][index]["step"].data_ptr()
    # a list for betas (as JSON or HDF5 give it back) becomes the tuple torch uses
    as_json = copy.deepcopy(saved)
    as_json["param_groups"][0]["betas"] = [0.8, 0.9]
    opt.load_state_dict(as_json)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    # float64 state into float32 parameters is cast, like torch
    double = copy.deepcopy(saved)
    double["state"][0]["exp_avg"] = double["state"][0]["exp_avg"].double()
    opt.load_state_dict(double)
    assert opt.state[ours[0]]["exp_avg"].dtype == torch.float32


def test_load_state_dict_errors() -> None:
    ours, _ = make_pair(torch.float64)
    opt = Adam(ours)
    saved = Adam(ours).state_dict()
    wrong_groups = copy.deepcopy(saved)
    wrong_groups["param_groups"].append(copy.deepcopy(saved["param_groups"][0]))
    with pytest.raises(StateDictError, match="parameter groups"):
        opt.load_state_dict(wrong_groups)
    wrong_size = copy.deepcopy(saved)
    wrong_size["param_groups"][0]["params"] = [0, 1]
    with pytest.raises(StateDictError, match="holds 2 parameters"):
        opt.load_state_dict(wrong_size)
    wrong_shape = copy.deepcopy(saved)
    wrong_shape["state"] = {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(7)}}
    with pytest.raises(StateDictError, match="shape"):
        opt.load_state_dict(wrong_shape)
    with pytest.raises(StateDictError, match="param_groups"):
        opt.load_state_dict({"state": {}})


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("SGD", {"lr": -0.1}, "learning rate"),
        ("SGD", {"momentum": -0.5}, "momentum"),
        ("SGD", {"weight_decay": -1.0}, "weight_decay"),
        ("SGD", {"nesterov": True}, "Nesterov"),
        ("SGD", {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "Nesterov"),
        ("Adam", {"lr": -1e-3}, "learning rate"),
        ("Adam", {"eps": -1.0}, "epsilon"),
        ("Adam", {"betas": (1.0, 0.999)}, "beta parameter at index 0"),
        ("Adam", {"betas": (0.9, -0.1)}, "beta parameter at index 1"),
        ("Adam", {"weight_decay": -0.1}, "weight_decay"),
        ("AdamW", {"betas": (0.9, 1.5)}, "beta parameter at index 1"),
    ],
)
def test_invalid_hyperparameters_raise_like_torch(
    name: str, options: dict[str, Any], message: str
) -> None:
    ours, theirs = make_pair(torch.float32)
    our_cls, their_cls = OPTIMIZERS[name]
    with pytest.raises(ValueError, match=message):
        our_cls(ours, **options)
    with pytest.raises(ValueError):  # torch refuses the same arguments
        their_cls(theirs, **options)


def test_invalid_parameter_lists_raise() -> None:
    ours, _ = make_pair(torch.float32)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(ValueError):
        torch.optim.Adam([])
    with pytest.raises(ValueError, match="appears twice"):
        SGD([ours[0], ours[0]])
    with pytest.raises(ValueError, match="appears twice"):
        SGD([{"params": ours[:1]}, {"params": ours[:2]}])
    # a group's own hyperparameters are checked too
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([{"params": ours, "nesterov": True}])
    with pytest.raises(ValueError, match="learning rate"):
        Adam(ours).add_param_group({"params": [Parameter(torch.zeros(1))], "lr": -1.0})


def test_type_errors() -> None:
    with pytest.raises(TypeError, match=r"scidevnn\.Parameter objects, got Tensor"):
        SGD([torch.zeros(3)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ordered iterable"):
        SGD({Parameter(torch.zeros(2))})
    with pytest.raises(TypeError, match="ordered iterable"):
        SGD(Parameter(torch.zeros(2)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ordered collection"):
        SGD([{"params": {Parameter(torch.zeros(2))}}])


def test_zero_grad_and_skipped_parameters() -> None:
    ours, _ = make_pair(torch.float64)
    opt = SGD(ours, lr=0.1, momentum=0.9)
    before = [p.data.clone() for p in ours]
    opt.step()  # no gradients at all: nothing moves, no state
    assert all(torch.equal(p.data, b) for p, b in zip(ours, before, strict=True))
    assert opt.state == {}
    for p in ours:
        p.grad = torch.ones_like(p.data)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in ours)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)


def test_step_never_modifies_gradients_and_returns_closure_value() -> None:
    ours, theirs = make_pair(torch.float32)
    variants: list[dict[str, Any]] = [
        {"maximize": True, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True},
        {"weight_decay": 0.1, "momentum": 0.9, "nesterov": True},
    ]
    for options in variants:
        opt = SGD(ours, lr=0.1, **options)
        set_grads(ours, theirs, 0)
        grads = [p.grad.clone() for p in ours if p.grad is not None]
        assert opt.step(lambda: 3.5) == 3.5
        opt.step()
        assert all(
            torch.equal(p.grad, g) for p, g in zip(ours, grads, strict=True) if p.grad is not None
        )
    opt_adam = Adam(ours, maximize=True, weight_decay=0.1)
    grads = [p.grad.clone() for p in ours if p.grad is not None]
    opt_adam.step()
    assert all(
        torch.equal(p.grad, g) for p, g in zip(ours, grads, strict=True) if p.grad is not None
    )


def test_training_a_linear_layer_follows_torch() -> None:
    """Our Linear + our SGD vs torch.nn.Linear + autograd + torch.optim.SGD, 20 steps."""
    torch.manual_seed(0)
    ours = scidevnn.Linear(5, 3, dtype=torch.float64)
    theirs = torch.nn.Linear(5, 3, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    opt = SGD(ours.parameters(), lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 5, dtype=torch.float64)
    target = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(STEPS):
        opt.zero_grad()
        ref.zero_grad()
        y = ours(x)
        ours.backward(2 * (y - target) / y.numel())
        torch.nn.functional.mse_loss(theirs(x), target).backward()  # type: ignore[no-untyped-call]
        opt.step()
        ref.step()
    for name, tensor in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor, atol=1e-10, rtol=1e-10)


def test_repr_lists_groups() -> None:
    ours, _ = make_pair(torch.float32)
    text = repr(Adam(ours, lr=0.5))
    assert text.startswith("Adam (") and "lr: 0.5" in text and "Parameter Group 0" in text
