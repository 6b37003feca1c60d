"""Downloading base images, verified by sha256 before they are ever used.

The file is streamed to `<dest>.part` and hashed on the way; only a verified file is
renamed to `dest`, so a half-downloaded or tampered image can never be picked up.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from agentbox import __version__
from agentbox.errors import ChecksumMismatch, ImageError, InvalidInput
from agentbox.model.progress import CancelToken, Progress, ProgressCallback

SOCKET_TIMEOUT_S = 60.0
CHUNK_BYTES = 256 * 1024
PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress events per second
MAX_CHECKSUM_FILE_BYTES = 4 * 1024 * 1024
_USER_AGENT = f"agentbox/{__version__}"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# GNU coreutils style: "<hex>  <name>" (text) or "<hex> *<name>" (binary).
_GNU_LINE = re.compile(r"^([0-9a-fA-F]{64})\s[ *]?(.+)$")
# BSD style, as written by `sha256sum --tag`: "SHA256 (<name>) = <hex>".
_BSD_LINE = re.compile(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$")


def download_verified(
    *,
    url: str,
    dest: Path,
    sha256: str | None,
    sha256_url: str | None,
    on_progress: ProgressCallback,
    cancel: CancelToken,
) -> str:
    """Download `url` to `dest` and return its sha256 hex digest.

    Exactly one of `sha256` (the expected digest) or `sha256_url` (a SHA256SUMS-style file
    listing the URL's file name) must be given. On any failure `dest` is not created and
    the partial file is removed.
    """
    if (sha256 is None) == (sha256_url is None):
        raise InvalidInput(
            f"image {url}: give exactly one of sha256 or sha256_url",
            hint="agentbox never uses an image it cannot verify",
        )
    _check_url(url)
    if sha256 is not None:
        if not _HEX64.match(sha256):
            raise InvalidInput(f"image {url}: sha256 must be 64 hex digits, got {sha256!r}")
        expected = sha256.lower()
    else:
        assert sha256_url is not None
        on_progress(Progress(step="download", detail=f"checksum list {sha256_url}"))
        expected = fetch_expected_sha256(url=url, sha256_url=sha256_url)
    cancel.raise_if_cancelled()

    part = dest.with_suffix(".part")
    try:
        actual = _stream_to(url=url, part=part, on_progress=on_progress, cancel=cancel)
        if actual != expected:
            raise ChecksumMismatch(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}",
                hint="the file changed on the server or was tampered with in transit; "
                "check the template's sha256 / sha256_url",
            )
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return actual


def fetch_expected_sha256(*, url: str, sha256_url: str) -> str:
    """Fetch a SHA256SUMS-style file and return the digest listed for the URL's file name."""
    _check_url(sha256_url)
    name = _basename(url)
    try:
        with _open(sha256_url) as response:
            raw = response.read(MAX_CHECKSUM_FILE_BYTES + 1)
    except ImageError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise _network_error(sha256_url, exc) from exc
    if len(raw) > MAX_CHECKSUM_FILE_BYTES:
        raise ImageError(f"checksum list {sha256_url} is larger than 4 MiB: refused")
    digest = parse_checksum_list(text=raw.decode("utf-8", errors="replace"), name=name)
    if digest is None:
        raise ImageError(
            f"checksum list {sha256_url} has no entry for {name!r}",
            hint="check that sha256_url belongs to the image url in the template",
        )
    return digest


def parse_checksum_list(*, text: str, name: str) -> str | None:
    """The lowercase digest for file `name` in SHA256SUMS text, or None if it is not listed."""
    for line in text.splitlines():
        line = line.strip()
        gnu = _GNU_LINE.match(line)
        if gnu:
            digest, listed = gnu.group(1), gnu.group(2)
        else:
            bsd = _BSD_LINE.match(line)
            if not bsd:
                continue
            listed, digest = bsd.group(1), bsd.group(2)
        listed = listed.strip()
        listed = listed.removeprefix("./")
        if listed == name:
            return digest.lower()
    return None


def _stream_to(*, url: str, part: Path, on_progress: ProgressCallback, cancel: CancelToken) -> str:
    name = _basename(url)
    digest = hashlib.sha256()
    received = 0
    with open(part, "wb") as out, _open(url) as response:
        total = _content_length(response)
        on_progress(_progress(name=name, received=0, total=total))
        last_report = time.monotonic()
        while True:
            cancel.raise_if_cancelled()
            try:
                # read1 returns what has arrived, so cancel is checked even on a slow link.
                chunk = response.read1(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise _network_error(url, exc) from exc
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_S:
                on_progress(_progress(name=name, received=received, total=total))
                last_report = now
    if total is not None and received != total:
        raise ImageError(
            f"download of {url} was cut off after {received} of {total} bytes",
            hint="the connection was interrupted; try again",
        )
    on_progress(_progress(name=name, received=received, total=total, done=True))
    return digest.hexdigest()


def _progress(*, name: str, received: int, total: int | None, done: bool = False) -> Progress:
    mib = received / (1024 * 1024)
    if total:
        detail = f"{name}: {mib:.1f} of {total / (1024 * 1024):.1f} MiB"
        fraction: float | None = 1.0 if done else min(received / total, 1.0)
    else:
        detail = f"{name}: {mib:.1f} MiB"
        fraction = 1.0 if done else None
    return Progress(step="download", detail=detail, fraction=fraction)


def _open(url: str) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        # The scheme was checked (http, https, file): no ftp:// or data: through urllib.
        return urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ImageError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}",
            hint="check the URL in the template; the file may have moved",
        ) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _network_error(url, exc) from exc


def _network_error(url: str, exc: BaseException) -> ImageError:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        what = f"no data for {SOCKET_TIMEOUT_S:.0f} s"
    else:
        what = str(reason) or type(reason).__name__
    return ImageError(
        f"download of {url} failed: {what}",
        hint="check the network connection (and any http_proxy/https_proxy settings), "
        "then try again",
    )


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or response.headers.get("Transfer-Encoding"):
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _check_url(url: str) -> None:
    # http(s) for real images; file:// for local ones (tests, air-gapped hosts). Either
    # way the bytes are verified against the sha256 before anything uses them.
    parsed = urllib.parse.urlsplit(url)
    remote = parsed.scheme in ("http", "https") and bool(parsed.hostname)
    local = parsed.scheme == "file" and parsed.netloc in ("", "localhost") and bool(parsed.path)
    if not (remote or local):
        raise ImageError(
            f"cannot download {url!r}: not an http://, https:// or file:// URL",
            hint="image urls in templates must start with https:// (or http://, file://)",
        )


def _basename(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    name = path.rsplit("/", 1)[-1]
    if not name:
        raise ImageError(f"cannot tell the file name of {url!r}: the URL ends in '/'")
    return name
