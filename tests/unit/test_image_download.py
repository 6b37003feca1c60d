"""download_verified against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbox.errors import Cancelled, ChecksumMismatch, ImageError, InvalidInput
from agentbox.images.download import download_verified, parse_checksum_list
from agentbox.model.progress import CancelToken, Progress, ignore_progress


@dataclass
class Route:
    body: bytes
    status: int = 200
    send_bytes: int | None = None  # announce len(body) but close after this many bytes
    chunk: int = 64 * 1024
    delay_s: float = 0.0  # between chunks


@dataclass
class LocalServer:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return self.requests.count(path)


def _handler_for(state: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            self.send_response(route.status)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            payload = route.body if route.send_bytes is None else route.body[: route.send_bytes]
            try:
                for start in range(0, len(payload), route.chunk):
                    self.wfile.write(payload[start : start + route.chunk])
                    self.wfile.flush()
                    if route.delay_s:
                        time.sleep(route.delay_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (cancel test)
            if route.send_bytes is not None:
                self.close_connection = True

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@pytest.fixture()
def server() -> Iterator[LocalServer]:
    state = LocalServer(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(url: str, dest: Path, *, sha256: str | None = None, sha256_url: str | None = None,
              on_progress=ignore_progress, cancel: CancelToken | None = None) -> str:
    return download_verified(url=url, dest=dest, sha256=sha256, sha256_url=sha256_url,
                             on_progress=on_progress, cancel=cancel or CancelToken())


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


BODY = os.urandom(300_000)


def test_good_download_with_sha256(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/img/disk.qcow2"] = Route(BODY)
    dest = tmp_path / "disk.qcow2"
    digest = _download(server.url("/img/disk.qcow2"), dest, sha256=_sha(BODY).upper())
    assert digest == _sha(BODY)
    assert dest.read_bytes() == BODY
    assert _left(tmp_path) == ["disk.qcow2"]


def test_good_download_with_sha256_url(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/img/disk.qcow2"] = Route(BODY)
    sums = f"{'0' * 64}  other.qcow2\n{_sha(BODY)} *disk.qcow2\n{'1' * 64}  disk.qcow2.sig\n"
    server.routes["/img/SHA256SUMS"] = Route(sums.encode())
    dest = tmp_path / "disk.qcow2"
    digest = _download(server.url("/img/disk.qcow2"), dest, sha256_url=server.url("/img/SHA256SUMS"))
    assert digest == _sha(BODY)
    assert dest.read_bytes() == BODY


def test_sha256_url_without_an_entry_for_the_file(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/img/disk.qcow2"] = Route(BODY)
    server.routes["/img/SHA256SUMS"] = Route(f"{_sha(BODY)}  something-else.qcow2\n".encode())
    with pytest.raises(ImageError, match="no entry for 'disk.qcow2'"):
        _download(server.url("/img/disk.qcow2"), tmp_path / "d", sha256_url=server.url("/img/SHA256SUMS"))
    assert _left(tmp_path) == []
    assert server.count("/img/disk.qcow2") == 0  # refused before fetching the image


def test_checksum_mismatch_leaves_nothing(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/disk.img"] = Route(BODY)
    wrong = "ab" * 32
    with pytest.raises(ChecksumMismatch) as info:
        _download(server.url("/disk.img"), tmp_path / "disk.img", sha256=wrong)
    assert wrong in info.value.message and _sha(BODY) in info.value.message
    assert _left(tmp_path) == []


def test_connection_closed_early_is_an_error_and_leaves_nothing(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/disk.img"] = Route(BODY, send_bytes=len(BODY) // 2)
    with pytest.raises(ImageError, match="cut off") as info:
        _download(server.url("/disk.img"), tmp_path / "disk.img", sha256=_sha(BODY))
    assert not isinstance(info.value, ChecksumMismatch)
    assert info.value.hint
    assert _left(tmp_path) == []


def test_http_404_is_an_image_error(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="404") as info:
        _download(server.url("/missing.img"), tmp_path / "disk.img", sha256=_sha(BODY))
    assert info.value.hint
    assert _left(tmp_path) == []


def test_connection_refused_is_an_image_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ImageError, match="failed") as info:
        _download(f"http://127.0.0.1:{port}/disk.img", tmp_path / "disk.img", sha256=_sha(BODY))
    assert info.value.hint
    assert _left(tmp_path) == []


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/disk.img", "not a url", "http:///x", "file://elsewhere/disk.img", "data:,x"]
)
def test_bad_urls_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not an http"):
        _download(url, tmp_path / "disk.img", sha256=_sha(BODY))
    assert _left(tmp_path) == []


def test_local_file_urls_are_verified_too(tmp_path: Path) -> None:
    source = tmp_path / "src" / "disk.img"
    source.parent.mkdir()
    source.write_bytes(BODY)
    out = tmp_path / "out"
    out.mkdir()
    events: list[Progress] = []
    assert _download(source.as_uri(), out / "disk.img", sha256=_sha(BODY), on_progress=events.append) == _sha(BODY)
    assert (out / "disk.img").read_bytes() == BODY
    assert events[-1].fraction == 1.0
    with pytest.raises(ChecksumMismatch):
        _download(source.as_uri(), out / "other.img", sha256="0" * 64)
    with pytest.raises(ImageError, match="failed"):
        _download((tmp_path / "missing.img").as_uri(), out / "missing.img", sha256=_sha(BODY))
    assert _left(out) == ["disk.img"]


def test_exactly_one_checksum_source_is_required(server: LocalServer, tmp_path: Path) -> None:
    url = server.url("/disk.img")
    with pytest.raises(InvalidInput):
        _download(url, tmp_path / "d")
    with pytest.raises(InvalidInput):
        _download(url, tmp_path / "d", sha256=_sha(BODY), sha256_url=url)
    with pytest.raises(InvalidInput, match="64 hex"):
        _download(url, tmp_path / "d", sha256="abc")
    assert server.requests == []


def test_progress_fractions_rise_to_one(server: LocalServer, tmp_path: Path) -> None:
    body = os.urandom(1_000_000)
    server.routes["/disk.img"] = Route(body, chunk=50_000, delay_s=0.02)
    events: list[Progress] = []
    _download(server.url("/disk.img"), tmp_path / "disk.img", sha256=_sha(body), on_progress=events.append)
    fractions = [e.fraction for e in events]
    assert all(e.step == "download" for e in events)
    assert len(events) >= 3  # start, at least one in between, the end
    assert fractions == sorted(fractions)  # type: ignore[type-var]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any(0.0 < f < 1.0 for f in fractions if f is not None)
    # Throttled: about 0.4 s of transfer must not give one event per chunk.
    assert len(events) < 20


def test_cancel_mid_download_leaves_nothing(server: LocalServer, tmp_path: Path) -> None:
    body = os.urandom(2_000_000)
    server.routes["/disk.img"] = Route(body, chunk=20_000, delay_s=0.02)
    cancel = CancelToken()
    seen: list[Progress] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress)
        if progress.fraction and progress.fraction > 0:
            cancel.cancel()

    started = time.monotonic()
    with pytest.raises(Cancelled):
        _download(server.url("/disk.img"), tmp_path / "disk.img", sha256=_sha(body),
                  on_progress=on_progress, cancel=cancel)
    assert time.monotonic() - started < 1.5  # the whole transfer would take ~2 s
    assert all((p.fraction or 0) < 1.0 for p in seen)
    assert _left(tmp_path) == []


def test_parse_checksum_list_formats() -> None:
    digest = "ABCDEF" + "0" * 58
    text = (
        "# comment\n"
        f"{'1' * 64}  debian-12-genericcloud-amd64.raw\n"
        f"{digest}  debian-12-genericcloud-amd64.qcow2\n"
        f"SHA256 (bsd.img) = {'2' * 64}\n"
        f"{'3' * 64} *./binary.img\n"
    )
    assert parse_checksum_list(text=text, name="debian-12-genericcloud-amd64.qcow2") == digest.lower()
    assert parse_checksum_list(text=text, name="bsd.img") == "2" * 64
    assert parse_checksum_list(text=text, name="binary.img") == "3" * 64
    assert parse_checksum_list(text=text, name="debian-12-genericcloud-amd64") is None
