"""Replace a file so that a reader, or a crash, sees the old contents or the new, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(*, path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` with permissions `mode`; raises OSError, leaving no temporary file.

    mkstemp creates the temporary file 0600 with O_EXCL, in the target's directory (so the
    rename stays on one file system): a secret is never readable by others, not even between
    creation and the chmod, and two writers never share a temporary file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write or fsync: name the file it was for (the CLI shows it)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
