"""The plugin authors' test helpers of scidevnn.testing: ``build_pair`` against torch's own
initialisation, ``fresh_registry`` and ``check_storage_round_trip``, each passing on a sound
layer and naming what is wrong on a faulty one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

import scidevnn as sd
from scidevnn import plugins
from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn.plugins import Registry, make_plugin_manager
from scidevnn.testing import build_pair, check_storage_round_trip, fresh_registry, leaf


class ZeroBias(sd.Linear):
    """A Linear that does not initialise its bias like torch."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        assert self.bias is not None
        self.bias.data.zero_()


class NoBias(sd.Linear):
    """A Linear that forgets torch's default ``bias=True``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)


class Shifted(sd.Linear):
    """A Linear with a shift that is neither configuration nor state: lost when saved."""

    shift = 0.0

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = super().forward(x)
        return out + self.shift


class ShiftedPlugin:
    @hookimpl
    def register_layers(self, register: RegisterFn) -> None:
        register(Shifted)


def shifted_registry() -> Registry:
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(ShiftedPlugin(), name="shifted-test")
    return Registry(manager)


def test_build_pair_gives_torchs_initial_weights() -> None:
    ours, theirs = build_pair(sd.Linear, torch.nn.Linear, 5, 3, seed=7)
    torch.manual_seed(7)
    expected = torch.nn.Linear(5, 3)
    assert isinstance(ours, sd.Linear) and isinstance(theirs, torch.nn.Linear)
    assert torch.equal(ours.weight.data, expected.weight.data)
    assert torch.equal(theirs.weight.data, expected.weight.data)


def test_build_pair_names_what_differs() -> None:
    with pytest.raises(AssertionError, match="ZeroBias bias: initialisation differs"):
        build_pair(ZeroBias, torch.nn.Linear, 4, 2)
    with pytest.raises(AssertionError, match=r"NoBias: state_dict keys \['weight'\] differ"):
        build_pair(NoBias, torch.nn.Linear, 4, 2)


def test_leaf_requires_grad_for_floating_tensors_only() -> None:
    x = torch.randn(3)
    copy = leaf(x)
    assert copy.requires_grad and copy.is_leaf and torch.equal(copy, x)
    assert copy.data_ptr() != x.data_ptr()
    assert not leaf(torch.arange(3)).requires_grad


def test_fresh_registry_installs_then_drops_a_registry() -> None:
    custom = shifted_registry()
    with fresh_registry(custom):
        assert plugins.get_registry() is custom
        assert sd.get_layer("Shifted") is Shifted
    rebuilt = plugins.get_registry()
    assert rebuilt is not custom and "Shifted" not in rebuilt.layers
    with fresh_registry():
        assert plugins.get_registry() is not rebuilt
    plugins.reset_registry(None)


def test_round_trip_of_a_sound_model(tmp_path: Path) -> None:
    model = sd.Sequential(sd.Linear(4, 3, dtype=torch.float64), sd.Sigmoid())
    loaded = check_storage_round_trip(model, torch.randn(2, 4, dtype=torch.float64))
    assert type(loaded) is sd.Sequential and not loaded.training
    assert model.training  # restored
    path = tmp_path / "model.h5"
    check_storage_round_trip(model.eval(), torch.randn(5, 4, dtype=torch.float64), path)
    assert path.exists() and not model.training


def test_round_trip_names_an_output_that_changes(tmp_path: Path) -> None:
    with fresh_registry(shifted_registry()):
        layer = Shifted(3, 2)
        check_storage_round_trip(layer, torch.randn(4, 3), tmp_path / "plain.h5")
        layer.shift = 1.0
        with pytest.raises(AssertionError, match=r"Shifted: output \[0\] differs after loading"):
            check_storage_round_trip(layer, torch.randn(4, 3), tmp_path / "shifted.h5")
