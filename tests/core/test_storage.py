"""HDF5 model files: bit-exact round trips, the layout seen by plain h5py, optimizer state and
metadata for resuming, every way a file can be wrong, and atomic writes."""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import scidevnn as sd
from scidevnn import plugins
from scidevnn.errors import (
    DatasetMismatchError,
    FormatVersionError,
    MalformedFileError,
    MissingPluginError,
    ModelFileError,
    ModelFileNotFoundError,
    NotHDF5Error,
    TruncatedFileError,
)
from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn.module import Module
from scidevnn.parameter import Parameter
from scidevnn.plugins import Registry, make_plugin_manager
from scidevnn.storage import FORMAT_NAME, FORMAT_VERSION, load_checkpoint, load_model, save_model

DTYPES = [torch.float32, torch.float64]


# --------------------------------------------------------------------------- test layers
class Counter(Module):
    """A layer with an int64 scalar buffer, a bool buffer and a non-persistent float buffer."""

    count: torch.Tensor
    flags: torch.Tensor
    table: torch.Tensor

    def __init__(
        self,
        size: int,
        scale: float = 2.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.weight = Parameter(torch.randn(size, device=device, dtype=dtype))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("flags", torch.rand(size) > 0.5)
        self.register_buffer("table", torch.full((size,), scale, dtype=dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return x * self.weight.data * self.table


class Pair(Module):
    """A layer whose constructor builds its own sub-layers (like an LSTM holding cells)."""

    def __init__(self, features: int, kernel: tuple[int, int] = (1, 2)) -> None:
        super().__init__()
        self.kernel = kernel
        self.first = sd.Linear(features, features)
        self.second = sd.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.second(self.first(x))
        return y


class Unregistered(Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class NotJSON(Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table


class TestLayers:
    @hookimpl
    def register_layers(self, register: RegisterFn) -> None:
        for cls in (Counter, Pair, NotJSON):
            register(cls)


@pytest.fixture(autouse=True)
def registry() -> Iterator[Registry]:
    """The core's layers plus the test layers, no entry points; restored after the test."""
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(TestLayers(), name="storage-test-layers")
    registry = Registry(manager)
    plugins.reset_registry(registry)
    try:
        yield registry
    finally:
        plugins.reset_registry(None)


# --------------------------------------------------------------------------- helpers
def mlp(dtype: torch.dtype) -> sd.Sequential:
    return sd.Sequential(sd.Linear(6, 5), sd.Sigmoid(), sd.Linear(5, 4), sd.Softmax(dim=1)).to(
        dtype=dtype
    )


def torch_mlp(state: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.nn.Module:
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 4), torch.nn.Softmax(dim=1)
    ).to(dtype)
    net.load_state_dict(state)
    return net


def assert_same_state(a: Module, b: Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def file_state(path: Path) -> dict[str, torch.Tensor]:
    """Every layer dataset in the file by its ``key`` attribute, read with plain h5py."""
    state: dict[str, torch.Tensor] = {}

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset) and "key" in item.attrs:
            state[item.attrs["key"]] = torch.from_numpy(np.asarray(item[()]))

    with h5py.File(path, "r") as f:
        f["model"].visititems(visit)
    return state


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.h5"
    save_model(mlp(torch.float32), path)
    return path


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_bit_exact_and_matches_torch(tmp_path: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    model = mlp(dtype)
    path = tmp_path / "mlp.h5"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, sd.Sequential)
    assert [type(m) for m in loaded] == [sd.Linear, sd.Sigmoid, sd.Linear, sd.Softmax]
    assert [m.get_config() for m in loaded] == [m.get_config() for m in model]
    assert_same_state(model, loaded)
    x = torch.randn(7, 6, dtype=dtype)
    assert torch.equal(loaded(x), model(x))
    reference = torch_mlp(file_state(path), dtype)  # torch.nn fed the file's datasets
    with torch.no_grad():
        expected = reference(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(loaded(x), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nested_containers_and_every_core_layer(tmp_path: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    model = sd.Sequential(
        sd.Flatten(1, 2),
        sd.Sequential(sd.Linear(12, 8), sd.Sigmoid(), sd.Identity()),
        sd.Sequential(sd.Sequential(sd.Linear(8, 3, bias=False)), sd.LogSoftmax(dim=-1)),
    ).to(dtype=dtype)
    path = tmp_path / "nested.h5"
    save_model(model, path)
    loaded = load_model(path)
    assert repr(loaded) == repr(model)
    assert_same_state(model, loaded)
    x = torch.randn(2, 3, 4, dtype=dtype)
    assert torch.equal(loaded(x), model(x))
    ref = torch.nn.Sequential(
        torch.nn.Flatten(1, 2),
        torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.Sigmoid(), torch.nn.Identity()),
        torch.nn.Sequential(
            torch.nn.Sequential(torch.nn.Linear(8, 3, bias=False)), torch.nn.LogSoftmax(dim=-1)
        ),
    ).to(dtype)
    ref.load_state_dict(file_state(path))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_buffers_scalars_and_layers_that_build_their_own_children(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    torch.manual_seed(3)
    model = sd.Sequential(Counter(3, scale=0.5), Pair(3, kernel=(3, 4))).to(dtype=dtype)
    model[0](torch.ones(3, dtype=dtype))  # count becomes 1
    path = tmp_path / "custom.h5"
    save_model(model, path)
    loaded = load_model(path)
    assert_same_state(model, loaded)
    assert isinstance(loaded, sd.Sequential)
    counter, pair = loaded
    assert isinstance(counter, Counter) and isinstance(pair, Pair)
    assert counter.count.dtype == torch.int64 and int(counter.count) == 1
    assert counter.flags.dtype == torch.bool
    assert counter.table.dtype == dtype  # non-persistent buffer follows the file's dtype
    assert pair.kernel == (3, 4) and isinstance(pair.kernel, tuple)
    x = torch.randn(4, 3, dtype=dtype)
    assert torch.equal(loaded(x), model(x))
    with h5py.File(path, "r") as f:
        assert list(f["model/1"]) == ["first", "second"]
        assert f["model/0/count"].shape == ()
        assert f["model/1/second/weight"].attrs["key"] == "1.second.weight"


def test_float16_and_device_argument(tmp_path: Path) -> None:
    model = sd.Linear(3, 2).to(dtype=torch.float16)
    save_model(model, tmp_path / "half.h5")
    loaded = load_model(tmp_path / "half.h5", device="cpu")
    assert isinstance(loaded, sd.Linear)
    assert loaded.weight.dtype == torch.float16
    assert_same_state(model, loaded)


def test_layout_read_with_plain_h5py(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = sd.Sequential(sd.Linear(4, 3), sd.Sequential(sd.Sigmoid(), sd.Linear(3, 2)))
    path = tmp_path / "layout.h5"
    save_model(model, path)
    core_version = plugins.get_registry().layers["Linear"].version
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT_NAME == "scidevnn-model"
        assert f.attrs["format_version"] == FORMAT_VERSION == 1
        assert f.attrs["framework_version"] == sd.__version__
        assert list(f) == ["model"]
        top = f["model"]
        assert top.attrs["type"] == "Sequential"
        assert list(top) == ["0", "1"]
        assert top.attrs["children"] == '["0", "1"]'
        linear = top["0"]
        assert linear.attrs["type"] == "Linear"
        assert linear.attrs["distribution"] == "scidevnn-core"
        assert linear.attrs["distribution_version"] == core_version
        assert linear.attrs["config"] == '{"in_features": 4, "out_features": 3, "bias": true}'
        assert list(linear) == ["weight", "bias"]
        assert linear["weight"].attrs["key"] == "0.weight"
        assert linear["weight"].dtype == np.float32
        assert list(top["1"]) == ["0", "1"]
        assert top["1/0"].attrs["type"] == "Sigmoid"
        assert list(top["1/0"]) == []
        assert top["1/1/bias"].attrs["key"] == "1.1.bias"
        # strings are variable-length UTF-8, readable by any HDF5 tool
        assert h5py.check_string_dtype(top.attrs.get_id("config").dtype).encoding == "utf-8"
    reference = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.Sequential(torch.nn.Sigmoid(), torch.nn.Linear(3, 2))
    )
    reference.load_state_dict(file_state(path))
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- optimizer, metadata
def train_steps(model: Module, optimizer: sd.Optimizer, x: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        y = model(x)
        model.backward(torch.cos(y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_state_resumes_training_exactly(tmp_path: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(5)
    model = mlp(dtype)
    optimizer = sd.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    x = torch.randn(8, 6, dtype=dtype)
    for _ in range(3):
        train_steps(model, optimizer, x, 1)
        optimizer.step()
    path = tmp_path / "ckpt.h5"
    save_model(model, path, optimizer=optimizer, metadata={"epoch": 3})
    checkpoint = load_checkpoint(path)
    assert checkpoint.optimizer_type == "Adam"
    assert checkpoint.metadata == {"epoch": 3}
    state = checkpoint.optimizer_state
    assert state is not None
    original = optimizer.state_dict()
    assert state["param_groups"] == original["param_groups"]
    assert state["param_groups"][0]["betas"] == (0.8, 0.9)
    assert list(state["state"]) == list(original["state"])
    for index, values in original["state"].items():
        assert list(state["state"][index]) == list(values)
        for name, value in values.items():
            assert torch.equal(state["state"][index][name], value)
            assert state["state"][index][name].dtype == value.dtype
    # torch.optim accepts the stored layout as is
    torch_params = [torch.nn.Parameter(p.data.clone()) for p in checkpoint.model.parameters()]
    torch_adam = torch.optim.Adam(torch_params, lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    torch_adam.load_state_dict(state)
    # resuming from the file follows the uninterrupted run bit for bit
    resumed = checkpoint.model
    resumed_optimizer = sd.Adam(resumed.parameters(), lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    resumed_optimizer.load_state_dict(state)
    for _ in range(2):
        train_steps(model, optimizer, x, 1)
        optimizer.step()
        train_steps(resumed, resumed_optimizer, x, 1)
        resumed_optimizer.step()
    assert_same_state(model, resumed)


class FakeOptimizer:
    """A torch-layout state dict with plain numbers, None, tuples and names."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "state": {
                0: {"step": 7, "momentum_buffer": torch.arange(6.0).reshape(2, 3)},
                1: {"step": 7, "momentum_buffer": None, "scale": 0.25},
            },
            "param_groups": [
                {
                    "lr": 0.1,
                    "betas": (0.9, 0.99),
                    "foreach": None,
                    "nesterov": True,
                    "params": [0, 1],
                    "param_names": ["0.weight", "0.bias"],
                }
            ],
        }


def test_optimizer_state_with_plain_values(tmp_path: Path) -> None:
    path = tmp_path / "fake.h5"
    save_model(sd.Linear(3, 2), path, optimizer=FakeOptimizer())
    checkpoint = load_checkpoint(path)
    expected = FakeOptimizer().state_dict()
    state = checkpoint.optimizer_state
    assert state is not None and checkpoint.optimizer_type == "FakeOptimizer"
    assert state["param_groups"] == expected["param_groups"]
    assert isinstance(state["param_groups"][0]["params"], list)
    assert state["state"][1] == expected["state"][1]
    assert type(state["state"][0]["step"]) is int
    assert torch.equal(
        state["state"][0]["momentum_buffer"], expected["state"][0]["momentum_buffer"]
    )


def test_metadata_round_trip_with_long_lists(tmp_path: Path) -> None:
    losses = [math.sin(i) / (i + 1) for i in range(100_000)]  # 800 kB: never an attribute
    metadata = {
        "epochs": 12,
        "learning_rate": 1e-3,
        "dataset": "MNIST sample, 4000 train / 1000 test",
        "losses": [*losses, math.inf],
        "epoch_ids": list(range(50_000)),
        "mixed": [1, 2.5, "three", None, True],
        "nested": {"accuracy": [0.9, 0.95], "best": {"epoch": 3}},
        "done": False,
        "nothing": None,
        "empty": [],
    }
    path = tmp_path / "meta.h5"
    save_model(sd.Linear(2, 2), path, metadata=metadata)
    assert load_checkpoint(path).metadata == metadata
    with h5py.File(path, "r") as f:
        assert list(f["metadata"]) == list(metadata)
        assert f["metadata/losses"].dtype == np.float64
        assert f["metadata/losses"].shape == (100_001,)
        assert f["metadata/epoch_ids"].dtype == np.int64
        for name in ("model", "metadata"):
            for item in [f[name], *f[name].values()]:
                assert all(len(str(v)) < 1000 for v in item.attrs.values())
    assert load_checkpoint(path).optimizer_state is None


def test_load_model_ignores_training_state(tmp_path: Path) -> None:
    model = sd.Linear(3, 3)
    optimizer = sd.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, optimizer, torch.randn(2, 3), 1)
    optimizer.step()
    path = tmp_path / "sgd.h5"
    save_model(model, path, optimizer=optimizer, metadata={"a": [1, 2]})
    assert_same_state(model, load_model(path))
    state = load_checkpoint(path).optimizer_state
    assert state is not None
    assert torch.equal(
        state["state"][0]["momentum_buffer"], optimizer.state_dict()["state"][0]["momentum_buffer"]
    )


# --------------------------------------------------------------------------- bad files
def check_message(exc: pytest.ExceptionInfo[ModelFileError], path: Path, group: str) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert f"'{path}'" in message and f"group '{group}'" in message, message
    return message


def edit(path: Path, change: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    with pytest.raises(ModelFileNotFoundError, match="does not exist") as exc:
        load_model(path)
    assert str(path) in str(exc.value) and isinstance(exc.value, FileNotFoundError)
    with pytest.raises(ModelFileError, match="is a directory"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"hello, this is a text file\n", "no HDF5 signature"),
        (b"PK\x03\x04" + bytes(600), "no HDF5 signature"),  # a zip / torch.save file
    ],
)
def test_not_hdf5(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(NotHDF5Error, match=expected) as exc:
        load_model(path)
    check_message(exc, path, "/")


def test_truncated_at_many_points(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    cuts = sorted({3, 8, 9, 48, 96, 512, 1024, len(data) // 3, len(data) // 2, len(data) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.h5"
        path.write_bytes(data[:cut])
        with pytest.raises(TruncatedFileError, match="truncated") as exc:
            load_model(path)
        check_message(exc, path, "/")


def test_damaged_dataset_storage(saved: Path) -> None:
    def chunk_the_weight_and_zero_its_index(f: h5py.File) -> None:
        data = f["model/0/weight"][()]
        del f["model/0/weight"]
        f["model/0"].create_dataset("weight", data=data, chunks=(1, 6), compression="gzip")

    edit(saved, chunk_the_weight_and_zero_its_index)
    with h5py.File(saved, "r") as f:
        offset = f["model/0/weight"].id.get_chunk_info(0).byte_offset
    with open(saved, "r+b") as stream:  # scribble over the first compressed chunk
        stream.seek(offset)
        stream.write(b"\xff" * 8)
    with pytest.raises(TruncatedFileError, match="damaged") as exc:
        load_model(saved)
    check_message(exc, saved, "/model/0")


def conv2d(f: h5py.File) -> None:
    f["model/2"].attrs["type"] = "Conv2d"


def acme_layer(f: h5py.File) -> None:
    f["model/1"].attrs["type"] = "FancyAttention"
    f["model/1"].attrs["distribution"] = "acme-layers"


def unknown_core_layer(f: h5py.File) -> None:
    f["model/1"].attrs["type"] = "Mystery"


def set_attr(group: str, name: str, value: Any) -> Callable[[h5py.File], None]:
    return lambda f: f[group].attrs.__setitem__(name, value)


def replace(group: str, name: str, data: Any) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        del f[group][name]
        f[group].create_dataset(name, data=data)

    return change


BAD_FILES: list[tuple[str, Callable[[h5py.File], None], type[ModelFileError], str, list[str]]] = [
    ("conv2d", conv2d, MissingPluginError, "/model/2", ["'Conv2d'", "plugin package scidevnn-cnn"]),
    ("third-party", acme_layer, MissingPluginError, "/model/1", ["acme-layers"]),
    ("unknown", unknown_core_layer, MissingPluginError, "/model/1", ["Mystery", "Linear"]),
    (
        "missing-dataset",
        lambda f: f["model/0"].__delitem__("bias"),
        DatasetMismatchError,
        "/model/0",
        ["missing dataset(s) bias", "['weight', 'bias']", "['weight']"],
    ),
    (
        "extra-dataset",
        lambda f: f["model/1"].create_dataset("weight", data=np.zeros(3)),
        DatasetMismatchError,
        "/model/1",
        ["extra dataset(s) weight", "Sigmoid"],
    ),
    (
        "shape",
        replace("model/2", "weight", np.zeros((5, 4), np.float32)),
        DatasetMismatchError,
        "/model/2",
        ["'weight'", "shape (5, 4)", "expected (4, 5)"],
    ),
    (
        "dtype",
        replace("model/0", "bias", np.zeros(5, np.int32)),
        DatasetMismatchError,
        "/model/0",
        ["'bias'", "torch.int32", "expected torch.float32"],
    ),
    (
        "strings",
        replace("model/0", "bias", np.array(["a"] * 5, dtype=h5py.string_dtype())),
        DatasetMismatchError,
        "/model/0",
        ["not a tensor dtype"],
    ),
    (
        "version",
        set_attr("/", "format_version", 2),
        FormatVersionError,
        "/",
        ["format version 2", "reads format version 1", "upgrade scidevnn-core"],
    ),
    (
        "version-text",
        set_attr("/", "format_version", "one"),
        FormatVersionError,
        "/",
        ["format version 'one'", "reads format version 1"],
    ),
    ("not-ours", set_attr("/", "format", "keras"), MalformedFileError, "/", ["'keras'"]),
    (
        "no-model",
        lambda f: f.move("model", "net"),
        MalformedFileError,
        "/",
        ["no 'model' group"],
    ),
    (
        "config-json",
        set_attr("model/0", "config", '{"in_features": 6,'),
        MalformedFileError,
        "/model/0",
        ["'config' is not valid JSON"],
    ),
    (
        "config-args",
        set_attr("model/0", "config", '{"in_features": 6, "size": 3}'),
        MalformedFileError,
        "/model/0",
        ["Linear(**", "TypeError"],
    ),
    (
        "config-list",
        set_attr("model/0", "config", "[6, 5]"),
        MalformedFileError,
        "/model/0",
        ["must be a JSON object"],
    ),
    (
        "no-type",
        lambda f: f["model/3"].attrs.__delitem__("type"),
        MalformedFileError,
        "/model/3",
        ["'type'"],
    ),
    (
        "missing-layer",
        lambda f: f["model"].__delitem__("3"),
        MalformedFileError,
        "/model",
        ["lists 4 sub-layer(s)", "holds 3"],
    ),
]


@pytest.mark.parametrize(
    ("change", "error", "group", "fragments"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_file(
    saved: Path,
    change: Callable[[h5py.File], None],
    error: type[ModelFileError],
    group: str,
    fragments: list[str],
) -> None:
    edit(saved, change)
    with pytest.raises(error) as exc:
        load_model(saved)
    message = check_message(exc, saved, group)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_parent_builds_a_different_child(tmp_path: Path) -> None:
    path = tmp_path / "pair.h5"
    save_model(sd.Sequential(Pair(2)), path)
    edit(path, set_attr("model/0/first", "type", "Sigmoid"))
    with pytest.raises(MalformedFileError, match=r"holds a Sigmoid here.*builds a Linear") as exc:
        load_model(path)
    check_message(exc, path, "/model/0/first")


def test_bad_optimizer_and_metadata_groups(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.h5"
    save_model(sd.Linear(2, 2), path, optimizer=FakeOptimizer(), metadata={"a": 1})
    edit(path, set_attr("metadata/a", "encoding", "pickle"))
    with pytest.raises(MalformedFileError, match="metadata 'a'") as exc:
        load_checkpoint(path)
    check_message(exc, path, "/metadata")
    load_model(path)  # the model alone is still fine
    edit(path, lambda f: f["optimizer"].__delitem__("param_groups"))
    with pytest.raises(MalformedFileError, match="param_groups") as exc:
        load_checkpoint(path)
    check_message(exc, path, "/optimizer")


# --------------------------------------------------------------------------- failed saves
def test_save_refuses_unregistered_layers_and_non_json_config(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    with pytest.raises(ModelFileError, match="Unregistered: no installed plugin") as exc:
        save_model(sd.Sequential(sd.Linear(2, 2), Unregistered()), path)
    check_message(exc, path, "/model/1")
    with pytest.raises(ModelFileError, match="not JSON") as exc:
        save_model(NotJSON(torch.zeros(2)), path)
    check_message(exc, path, "/model")
    with pytest.raises(ModelFileError, match="metadata 'x' is not JSON"):
        save_model(sd.Linear(2, 2), path, metadata={"x": torch.zeros(1)})
    with pytest.raises(ModelFileError, match="not a usable name"):
        save_model(sd.Linear(2, 2), path, metadata={"a/b": 1})
    assert os.listdir(tmp_path) == []


def test_save_into_missing_or_unwritable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelFileError, match=r"directory .* does not exist"):
        save_model(sd.Linear(2, 2), tmp_path / "missing" / "model.h5")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError, match="is not a directory"):
        save_model(sd.Linear(2, 2), tmp_path / "file" / "model.h5")
    with pytest.raises(ModelFileError, match="directory of that name"):
        save_model(sd.Linear(2, 2), tmp_path)

    real_open = os.open

    def read_only_directory(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_directory)
    with pytest.raises(ModelFileError, match=r"directory .* is not writable \(Permission denied\)"):
        save_model(sd.Linear(2, 2), tmp_path / "model.h5")


@pytest.mark.parametrize("interruption", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_old_file(
    saved: Path, monkeypatch: pytest.MonkeyPatch, interruption: BaseException
) -> None:
    before = saved.read_bytes()
    from scidevnn.storage.layer_groups import write_layer

    def write_then_fail(*args: Any, **kwargs: Any) -> None:
        write_layer(*args, **kwargs)  # half the file is written
        raise interruption

    monkeypatch.setattr("scidevnn.storage.model_file.write_layer", write_then_fail)
    with pytest.raises(type(interruption)):
        save_model(sd.Sequential(sd.Linear(2, 2)), saved)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]
    monkeypatch.undo()
    torch.manual_seed(0)
    fixture_model = mlp(torch.float32)
    assert_same_state(load_model(saved), fixture_model)


def test_failed_rename_keeps_the_old_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()

    def no_replace(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(ModelFileError, match=r"cannot save model file .*cross-device") as exc:
        save_model(sd.Linear(2, 2), saved)
    assert str(saved) in str(exc.value)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_failed_new_save_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError):
        save_model(sd.Sequential(sd.Linear(2, 2), Unregistered()), tmp_path / "new.h5")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_the_file(saved: Path) -> None:
    torch.manual_seed(9)
    model = sd.Sequential(sd.Linear(2, 3))
    save_model(model, saved)
    assert_same_state(model, load_model(saved))
    assert os.listdir(saved.parent) == [saved.name]
