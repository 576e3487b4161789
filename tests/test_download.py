"""Downloads against a local HTTP server: checksums, resumed transfers, the cache, and pretrained models end to end.

The server runs on 127.0.0.1 in a thread; it answers ``Range`` requests (or ignores them when told to), can cut the
connection after N bytes of a response, and logs every request's path and Range header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from mobilenet.errors import MobilenetError
from mobilenet.models.preprocessing import IMAGENET_MEAN
from mobilenet.models.registry import create_model
from mobilenet.weights import sources
from mobilenet.weights.download import default_cache_dir, download
from tests.test_torch_import import TvV2, randomize

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    server: LocalServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.log.append((self.path, self.headers.get("Range")))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = self._range_start(len(data))
        if start is None:
            return
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cuts.pop(0) if self.server.cuts else None
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True  # the client sees the connection end before Content-Length bytes

    def _range_start(self, size: int) -> int | None:
        match = re.match(r"^bytes=(\d+)-$", self.headers.get("Range") or "")
        if match is None or not self.server.ranges:
            self.send_response(200)
            return 0
        start = int(match[1])
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        return start

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep pytest's output clean


class LocalServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {"/file.bin": PAYLOAD}
        self.cuts: list[int] = []  # cut the next responses after this many bytes
        self.ranges = True
        self.log: list[tuple[str, str | None]] = []

    def url(self, path: str = "/file.bin") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    thread = threading.Thread(target=local.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield local
    local.shutdown()
    local.server_close()
    thread.join(5)


def test_good_file_is_verified_and_cached(server: LocalServer, tmp_path) -> None:
    path = download(server.url(), SHA, tmp_path)
    assert path == tmp_path / "file.bin" and path.read_bytes() == PAYLOAD
    assert not list(tmp_path.glob("*.part"))
    assert server.log == [("/file.bin", None)]


def test_published_prefix_is_verified(server: LocalServer, tmp_path) -> None:
    assert download(server.url(), SHA[:8].upper(), tmp_path, filename="named.pth").name == "named.pth"


def test_bad_checksum_deletes_the_download(server: LocalServer, tmp_path) -> None:
    with pytest.raises(MobilenetError, match="checksum mismatch") as caught:
        download(server.url(), "0" * 64, tmp_path)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_cut_transfer_resumes_with_a_range_request(server: LocalServer, tmp_path) -> None:
    server.cuts = [30_000]
    path = download(server.url(), SHA, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.log == [("/file.bin", None), ("/file.bin", "bytes=30000-")]


def test_partial_file_survives_and_a_later_call_resumes(server: LocalServer, tmp_path) -> None:
    server.cuts = [1000, 2000]
    with pytest.raises(MobilenetError, match="1000 bytes are kept") as caught:
        download(server.url(), SHA, tmp_path, attempts=1)
    assert "\n" not in str(caught.value)
    assert (tmp_path / "file.bin.part").stat().st_size == 1000 and not (tmp_path / "file.bin").exists()
    assert download(server.url(), SHA, tmp_path).read_bytes() == PAYLOAD  # cut at 3000, then finished
    assert [r for _, r in server.log] == [None, "bytes=1000-", "bytes=3000-"]


def test_server_ignoring_range_restarts_from_zero(server: LocalServer, tmp_path) -> None:
    server.ranges, server.cuts = False, [5000]
    assert download(server.url(), SHA, tmp_path).read_bytes() == PAYLOAD
    assert [r for _, r in server.log] == [None, "bytes=5000-"]  # asked to resume, got the whole file


def test_cached_file_is_reused_without_network(server: LocalServer, tmp_path) -> None:
    url = server.url()
    download(url, SHA, tmp_path)
    server.shutdown()
    server.server_close()
    assert download(url, SHA, tmp_path).read_bytes() == PAYLOAD
    assert len(server.log) == 1


def test_a_cached_file_that_no_longer_verifies_is_fetched_again(server: LocalServer, tmp_path) -> None:
    (tmp_path / "file.bin").write_bytes(b"tampered")
    assert download(server.url(), SHA, tmp_path).read_bytes() == PAYLOAD
    assert len(server.log) == 1


@pytest.mark.parametrize(
    ("checksum", "path", "message"),
    [(None, "/file.bin", "no checksum is known"), ("xyz", "/file.bin", "not a SHA-256"), (SHA, "/gone", "HTTP 404")],
)
def test_download_errors_are_one_line(server: LocalServer, tmp_path, checksum, path: str, message: str) -> None:
    with pytest.raises(MobilenetError, match=message) as caught:
        download(server.url(path), checksum, tmp_path)
    assert "\n" not in str(caught.value)


def test_unverified_download_only_when_asked(server: LocalServer, tmp_path) -> None:
    assert download(server.url(), None, tmp_path, allow_unverified=True).read_bytes() == PAYLOAD


def test_cache_folder_follows_mobilenet_home(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MOBILENET_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "weights"


# ----------------------------------------------------------------------------------------------------------
# create_model(..., pretrained=...)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads make each forward far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def served_torchvision_v2(server: LocalServer, monkeypatch, tmp_path, single_thread):
    """torchvision's mobilenet_v2 file, as a locally served state dict in torchvision's layout."""
    reference = randomize(TvV2(1.0))
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    data = buffer.getvalue()
    server.files["/models/mobilenet_v2-test.pth"] = data
    entry = sources.find_file("torchvision", "mobilenet_v2", 1.0)
    local = dataclasses.replace(
        entry, url=server.url("/models/mobilenet_v2-test.pth"), sha256=hashlib.sha256(data).hexdigest()[:8]
    )
    monkeypatch.setattr(sources, "FILES", tuple(local if e is entry else e for e in sources.FILES))
    monkeypatch.setenv("MOBILENET_HOME", str(tmp_path / "home"))
    return server, reference


def test_create_model_pretrained_torchvision_end_to_end(served_torchvision_v2) -> None:
    server, reference = served_torchvision_v2
    model = create_model("mobilenet_v2_1.0_224", pretrained="torchvision")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
    assert model.config.bn_eps == 1e-5 and model.preprocessing.mean == IMAGENET_MEAN
    assert "mobilenet_v2-test.pth" in model.weights_info["source"]
    server.shutdown()  # the cached, verified file is enough from now on
    server.server_close()
    tuned = create_model("mobilenet_v2_1.0_160", pretrained="torchvision", num_classes=10)
    assert tuned.config.resolution == 160 and tuned.config.num_classes == 10
    assert tuned.weights_info["extra"]["fresh_layers"] == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(tuned.features(x), model.features(x))
    assert len(server.log) == 1


@pytest.mark.parametrize(
    ("name", "source", "options", "message"),
    [
        ("mobilenet_v2_1.0_224", "caffe", {}, "unknown pretrained source"),
        ("mobilenet_v1_1.0_224", "torchvision", {}, "publishes no mobilenet_v1"),
        ("mobilenet_v1_1.0_224", "timm", {}, "no published checksum"),
        ("mobilenet_v2_1.0_224", "torchvision", {"padding": "tf_same"}, "fix padding"),
    ],
)
def test_pretrained_errors_are_one_line(name: str, source: str, options: dict, message: str) -> None:
    with pytest.raises(MobilenetError, match=message) as caught:
        create_model(name, pretrained=source, **options)
    assert "\n" not in str(caught.value)


def test_sources_table_never_guesses_checksums() -> None:
    for entry in sources.FILES:
        if entry.source == "torchvision":  # the 8 hex digits in the file name are what torchvision publishes
            assert entry.sha256 == re.search(r"-([0-9a-f]{8})\.pth$", entry.url)[1]  # type: ignore[index]
        else:
            assert entry.sha256 is None or len(entry.sha256) == 64
        assert entry.url.startswith("https://")
    assert len({e.filename for e in sources.FILES}) == len(sources.FILES)
