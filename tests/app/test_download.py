"""download_mnist against a local HTTP server on 127.0.0.1: never the internet."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnist_cli.data import MNIST_MD5, DataError, download_mnist, resolve
from mnist_cli.data import download as download_module


def idx(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 8, tensor.dim()]) + b"".join(n.to_bytes(4, "big") for n in tensor.shape)
    return gzip.compress(header + bytes(tensor.flatten().tolist()))


IMAGES = torch.randint(
    0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
)
LABELS = torch.tensor([3, 1, 4], dtype=torch.uint8)
CONTENT = {
    "train-images-idx3-ubyte.gz": idx(IMAGES),
    "train-labels-idx1-ubyte.gz": idx(LABELS),
    "t10k-images-idx3-ubyte.gz": idx(IMAGES.flip(0)),
    "t10k-labels-idx1-ubyte.gz": idx(LABELS.flip(0)),
}
SUMS = {name: hashlib.md5(data).hexdigest() for name, data in CONTENT.items()}


class Server:
    """Mirrors under one server: /good/ serves CONTENT, /corrupt/ wrong bytes, /cut/ a body
    shorter than its Content-Length, anything else 404. Records every requested path."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                mirror, _, name = self.path.strip("/").partition("/")
                body = CONTENT.get(name)
                if body is None or mirror not in ("good", "corrupt", "cut"):
                    self.send_error(404)
                    return
                if mirror == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (50 if mirror == "cut" else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def mirror(self, name: str) -> str:
        return f"{self.base}/{name}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def assert_exactly_content(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(CONTENT)  # no temp files left
    for name, data in CONTENT.items():
        assert (folder / name).read_bytes() == data


def test_downloads_and_verifies(tmp_path: Path, server: Server) -> None:
    dest = tmp_path / "cache" / "mnist"
    assert download_mnist(dest, [server.mirror("good")], SUMS, timeout=5) == dest
    assert_exactly_content(dest)
    assert len(server.requests) == 4


def test_404_corrupt_cut_and_refused_mirrors_fall_through(tmp_path: Path, server: Server) -> None:
    mirrors = [
        closed_port_url(),
        server.mirror("missing"),
        server.mirror("corrupt"),
        server.mirror("cut"),
        server.mirror("good"),
    ]
    seen: list[str] = []
    download_mnist(tmp_path, mirrors, SUMS, timeout=5, progress=lambda n, url: seen.append(url))
    assert_exactly_content(tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    assert [u for u in seen if u.endswith(name)] == [m + name for m in mirrors]
    assert server.requests.count(f"/good/{name}") == 1


def test_total_failure_is_a_clear_error_and_leaves_nothing(tmp_path: Path, server: Server) -> None:
    mirrors = [server.mirror("missing"), server.mirror("corrupt"), server.mirror("cut")]
    with pytest.raises(DataError) as exc:
        download_mnist(tmp_path, mirrors, SUMS, timeout=5)
    message = str(exc.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte.gz" in message and "every mirror" in message
    assert "404" in message and "MD5 mismatch" in message and "incomplete" in message
    assert list(tmp_path.iterdir()) == []


def test_present_files_with_right_md5_are_kept(tmp_path: Path, server: Server) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(CONTENT["train-images-idx3-ubyte.gz"])
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"stale partial junk")
    download_mnist(tmp_path, [server.mirror("good")], SUMS, timeout=5)
    assert_exactly_content(tmp_path)
    assert "/good/train-images-idx3-ubyte.gz" not in server.requests
    assert "/good/train-labels-idx1-ubyte.gz" in server.requests
    server.requests.clear()
    download_mnist(tmp_path, [server.mirror("missing")], SUMS, timeout=5)  # all present
    assert server.requests == []


def test_resolve_mnist_download(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIDEVNN_DATA", str(tmp_path))
    monkeypatch.setattr(download_module, "MNIST_MIRRORS", (server.mirror("good"),))
    monkeypatch.setattr(download_module, "MNIST_MD5", SUMS)
    train = resolve("mnist", download=True, split="train")
    test = resolve("mnist", download=True, split="test")
    assert torch.equal(train.images, IMAGES) and torch.equal(test.images, IMAGES.flip(0))
    assert test.labels is not None and test.labels.tolist() == [4, 1, 3]
    assert_exactly_content(tmp_path / "mnist")


def test_known_mnist_file_names() -> None:
    assert sorted(MNIST_MD5) == sorted(CONTENT)
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in MNIST_MD5.values())
    assert all(m.startswith(("http://", "https://")) for m in download_module.MNIST_MIRRORS)


def test_no_mirrors_and_unwritable_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no mirrors"):
        download_mnist(tmp_path, [], SUMS)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        download_mnist(blocker / "sub", ["http://127.0.0.1:9/"], SUMS)
    assert str(blocker / "sub") in str(exc.value)
