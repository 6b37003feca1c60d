"""ImageStore: the cache of verified, read-only images (downloads served from 127.0.0.1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbox.errors import Cancelled, ChecksumMismatch, ConfigError, ImageError, NotFound
from agentbox.images import store as store_module
from agentbox.images.debian_build import KERNEL_CMDLINE, BuiltImage
from agentbox.images.record import IMAGE_JSON, ImageInfo
from agentbox.images.store import ImageStore
from agentbox.model.progress import CancelToken, Progress, ignore_progress
from agentbox.model.template import BuildRecipe, DownloadSource, Template

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

IMG_PATH = "/images/small.qcow2"


@dataclass
class Route:
    body: bytes
    chunk: int = 64 * 1024
    delay_s: float = 0.0  # between chunks


@dataclass
class LocalServer:
    """A static HTTP server on 127.0.0.1 that counts requests per path."""

    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return self.requests.count(path)


@pytest.fixture()
def server() -> Iterator[LocalServer]:
    state = LocalServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            try:
                for start in range(0, len(route.body), route.chunk):
                    self.wfile.write(route.body[start : start + route.chunk])
                    self.wfile.flush()
                    time.sleep(route.delay_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client cancelled

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def qcow2_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("qcow2") / "small.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(path), "16M")
    return path.read_bytes()


@pytest.fixture()
def served(server: LocalServer, qcow2_bytes: bytes) -> LocalServer:
    server.routes[IMG_PATH] = Route(qcow2_bytes)
    return server


def _template(url: str, data: bytes, *, name: str = "cloud") -> Template:
    sha = hashlib.sha256(data).hexdigest()
    return Template(name=name, description="test", image=DownloadSource(url=url, sha256=sha))


def _ensure(store: ImageStore, template: Template, **kwargs: object) -> ImageInfo:
    kwargs.setdefault("on_progress", ignore_progress)
    kwargs.setdefault("cancel", CancelToken())
    return store.ensure(template=template, **kwargs)  # type: ignore[arg-type]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    return tmp_path / "storage" / "images"


def test_ensure_downloads_verifies_and_stores_read_only(
    served: LocalServer, qcow2_bytes: bytes, image_dir: Path
) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    assert store.find(template=template) is None
    old_umask = os.umask(0o077)  # the dir must still be traversable by libvirt-qemu
    try:
        info = _ensure(store, template)
    finally:
        os.umask(old_umask)

    assert re.fullmatch(r"cloud-[0-9a-f]{12}", info.image_id)
    assert info.image_id == store.image_id_for(template=template)
    assert info.directory == image_dir / info.image_id
    assert info.disk == info.directory / "disk.qcow2"
    assert info.disk.read_bytes() == qcow2_bytes
    assert (info.disk_format, info.kernel, info.initrd, info.cmdline) == ("qcow2", None, None, None)
    assert info.sha256 == hashlib.sha256(qcow2_bytes).hexdigest()
    assert info.size_bytes == len(qcow2_bytes)
    assert info.source == served.url(IMG_PATH) and info.template == "cloud"
    assert info.created.endswith("+00:00")

    assert _mode(image_dir) == _mode(image_dir.parent) == 0o755
    assert _mode(info.directory) == 0o555
    assert sorted(p.name for p in info.directory.iterdir()) == ["disk.qcow2", IMAGE_JSON]
    assert all(_mode(p) == 0o444 for p in info.directory.iterdir())
    assert [p.name for p in image_dir.iterdir() if p.name.startswith(".tmp-")] == []

    recorded = json.loads((info.directory / IMAGE_JSON).read_text())
    assert set(recorded) == {f.name for f in dataclasses.fields(ImageInfo)}
    assert recorded["sha256"] == info.sha256
    assert store.find(template=template) == info


def test_second_ensure_reuses_the_image(served: LocalServer, qcow2_bytes: bytes, image_dir: Path) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    first = _ensure(store, template)
    events: list[Progress] = []
    second = ImageStore(image_dir=image_dir).ensure(template=template, on_progress=events.append,
                                                    cancel=CancelToken())
    assert second == first
    assert served.count(IMG_PATH) == 1
    assert events == []


def test_a_changed_checksum_is_a_different_image(served: LocalServer, qcow2_bytes: bytes, image_dir: Path) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    changed = dataclasses.replace(template, image=DownloadSource(url=template.image.url, sha256="0" * 64))
    assert store.image_id_for(template=template) == store.image_id_for(template=template)
    assert store.image_id_for(template=changed) != store.image_id_for(template=template)


def test_list_and_remove(served: LocalServer, qcow2_bytes: bytes, image_dir: Path) -> None:
    store = ImageStore(image_dir=image_dir)
    assert store.list_images() == ()
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    info = _ensure(store, template)
    assert store.list_images() == (info,)

    removed = store.remove(template=template)
    assert removed == info
    assert not info.directory.exists()
    assert store.find(template=template) is None
    assert store.list_images() == ()
    assert [p.name for p in image_dir.iterdir() if not p.name.startswith(".lock-")] == []
    with pytest.raises(NotFound) as missing:
        store.remove(template=template)
    assert "agentbox image list" in (missing.value.hint or "")


def test_leftover_tmp_dir_is_ignored_and_cleaned(served: LocalServer, qcow2_bytes: bytes, image_dir: Path) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    image_id = store.image_id_for(template=template)
    # What a run killed just before its rename leaves: it looks complete, but is not in place.
    leftovers = [image_dir / f".tmp-{image_id}-0badc0de", image_dir / ".tmp-other-image-1234abcd"]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "disk.qcow2").write_bytes(qcow2_bytes)
        (leftover / "disk.qcow2").chmod(0o444)
        leftover.chmod(0o555)

    assert store.find(template=template) is None
    assert store.list_images() == ()
    info = _ensure(store, template)
    assert served.count(IMG_PATH) == 1
    assert info.directory == image_dir / image_id
    assert not any(p.exists() for p in leftovers)


def test_complete_looking_dir_without_image_json_is_not_used(
    served: LocalServer, qcow2_bytes: bytes, image_dir: Path
) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    directory = image_dir / store.image_id_for(template=template)
    directory.mkdir(parents=True)
    (directory / "disk.qcow2").write_bytes(qcow2_bytes)
    assert store.find(template=template) is None
    assert store.list_images() == ()

    info = _ensure(store, template)  # replaces it with a verified one
    assert served.count(IMG_PATH) == 1
    assert store.find(template=template) == info


def test_image_json_that_does_not_match_the_disk_is_not_used(
    served: LocalServer, qcow2_bytes: bytes, image_dir: Path
) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), qcow2_bytes)
    info = _ensure(store, template)
    info.disk.chmod(0o644)
    with open(info.disk, "ab") as disk:
        disk.write(b"x")  # size no longer matches the record
    assert store.find(template=template) is None


def test_checksum_mismatch_stores_nothing(served: LocalServer, image_dir: Path) -> None:
    store = ImageStore(image_dir=image_dir)
    template = _template(served.url(IMG_PATH), b"not what the server sends")
    with pytest.raises(ChecksumMismatch):
        _ensure(store, template)
    assert [p.name for p in image_dir.iterdir() if not p.name.startswith(".lock-")] == []


def test_cancel_stores_nothing(server: LocalServer, image_dir: Path) -> None:
    body = os.urandom(1_000_000)
    server.routes["/big.img"] = Route(body, chunk=10_000, delay_s=0.01)
    cancel = CancelToken()

    def on_progress(progress: Progress) -> None:
        if progress.fraction:
            cancel.cancel()

    store = ImageStore(image_dir=image_dir)
    with pytest.raises(Cancelled):
        _ensure(store, _template(server.url("/big.img"), body), on_progress=on_progress, cancel=cancel)
    assert [p.name for p in image_dir.iterdir() if not p.name.startswith(".lock-")] == []


def test_raw_image_is_stored_as_disk_img(server: LocalServer, image_dir: Path) -> None:
    body = bytes(1024 * 1024)
    server.routes["/disk.raw"] = Route(body)
    info = _ensure(ImageStore(image_dir=image_dir), _template(server.url("/disk.raw"), body))
    assert info.disk_format == "raw"
    assert info.disk.name == "disk.img"


@pytest.mark.parametrize("kind", ["backing file", "external data file"])
def test_image_reaching_other_host_files_is_refused(
    kind: str, server: LocalServer, tmp_path: Path, image_dir: Path
) -> None:
    other, image = tmp_path / "other", tmp_path / "image.qcow2"
    if kind == "backing file":
        _qemu_img("create", "-q", "-f", "qcow2", str(other), "16M")
        _qemu_img("create", "-q", "-f", "qcow2", "-b", str(other), "-F", "qcow2", str(image))
    else:
        _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={other}", str(image), "16M")
    body = image.read_bytes()
    server.routes["/image.qcow2"] = Route(body)
    with pytest.raises(ImageError, match=kind):
        _ensure(ImageStore(image_dir=image_dir), _template(server.url("/image.qcow2"), body))
    assert [p.name for p in image_dir.iterdir() if not p.name.startswith(".lock-")] == []


def test_concurrent_ensure_downloads_once(server: LocalServer, qcow2_bytes: bytes, image_dir: Path) -> None:
    server.routes[IMG_PATH] = Route(qcow2_bytes, chunk=20_000, delay_s=0.01)
    template = _template(server.url(IMG_PATH), qcow2_bytes)
    results: list[ImageInfo] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_ensure(ImageStore(image_dir=image_dir), template))
        except BaseException as exc:  # noqa: BLE001 - reported below  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 3 and results[0] == results[1] == results[2]
    assert server.count(IMG_PATH) == 1


def test_unknown_recipe_names_the_known_ones(image_dir: Path) -> None:
    template = Template(name="t", description="", image=BuildRecipe(recipe="arch-linux"), source="t.yaml")
    with pytest.raises(ConfigError, match="debian-12") as info:
        ImageStore(image_dir=image_dir).image_id_for(template=template)
    assert "t.yaml" in info.value.message


def test_built_image_is_stored_with_kernel_and_never_rebuilt(
    monkeypatch: pytest.MonkeyPatch, image_dir: Path
) -> None:
    builds: list[Path] = []

    def fake_build(*, recipe, out_dir: Path, on_progress, cancel) -> BuiltImage:
        builds.append(out_dir)
        assert out_dir.parent == image_dir and out_dir.name.startswith(".tmp-debian-12-")
        disk = out_dir / "disk.qcow2"
        _qemu_img("create", "-q", "-f", "qcow2", str(disk), "8M")
        (out_dir / "vmlinuz").write_bytes(b"kernel")
        (out_dir / "initrd.img").write_bytes(b"initrd")
        return BuiltImage(disk=disk, disk_format="qcow2", kernel=out_dir / "vmlinuz",
                          initrd=out_dir / "initrd.img", cmdline=KERNEL_CMDLINE)

    monkeypatch.setattr(store_module, "check_build_prerequisites", lambda *, recipe: None)
    monkeypatch.setattr(store_module, "build_debian_image", fake_build)
    store = ImageStore(image_dir=image_dir)
    template = Template(name="debian", description="", image=BuildRecipe(recipe="debian-12"))
    info = _ensure(store, template)

    assert re.fullmatch(r"debian-12-[0-9a-f]{12}", info.image_id)
    assert info.source == "build:debian-12"
    assert info.kernel == info.directory / "vmlinuz" and info.kernel.read_bytes() == b"kernel"
    assert info.initrd == info.directory / "initrd.img"
    assert info.cmdline == "root=LABEL=agentbox-root ro"
    assert info.sha256 == hashlib.sha256(info.disk.read_bytes()).hexdigest()
    assert all(_mode(p) == 0o444 for p in info.directory.iterdir())

    # Another template on the same recipe, another mirror: the same image, no rebuild.
    monkeypatch.setenv("AGENTBOX_DEBIAN_MIRROR", "http://mirror.example/debian")
    other = Template(name="other", description="", image=BuildRecipe(recipe="debian-12"))
    assert _ensure(store, other) == info
    assert len(builds) == 1


def test_failed_build_leaves_nothing(monkeypatch: pytest.MonkeyPatch, image_dir: Path) -> None:
    def failing_build(*, recipe, out_dir: Path, on_progress, cancel) -> BuiltImage:
        (out_dir / "disk.qcow2").write_bytes(b"half")
        raise ImageError("boom")

    monkeypatch.setattr(store_module, "check_build_prerequisites", lambda *, recipe: None)
    monkeypatch.setattr(store_module, "build_debian_image", failing_build)
    template = Template(name="debian", description="", image=BuildRecipe(recipe="debian-12"))
    with pytest.raises(ImageError, match="boom"):
        _ensure(ImageStore(image_dir=image_dir), template)
    assert [p.name for p in image_dir.iterdir() if not p.name.startswith(".lock-")] == []


@pytest.fixture(autouse=True)
def _writable_tmp(tmp_path: Path) -> Iterator[None]:
    yield
    # Let pytest delete the read-only image directories even when not running as root.
    for directory, _, _ in os.walk(tmp_path):
        if not os.path.islink(directory):
            os.chmod(directory, 0o755)
