"""Atomic file writes: temp file in the same folder, fsync, ``os.replace``.

A crash at any moment leaves either the old file or the complete new one, never a torn file.
Temp files are named ``.<name>.<random>.tmp`` so that no reader mistakes them for results.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The process's umask, read once at import (os.umask can only be read by setting it, which is
# not safe while other threads create files).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def ordinary_mode(directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give a new file / folder under this umask (the
    temp files and folders made by ``tempfile`` are 0600 / 0700: outputs must not stay so)."""
    return (0o777 if directory else 0o666) & ~_UMASK


def make_ordinary(fd_or_path: int | str | os.PathLike[str], directory: bool = False,
                  like: Path | None = None) -> None:
    """Give a temp file (by descriptor or path) or temp folder the :func:`ordinary_mode`, or the
    mode of ``like`` when that file exists (replacing a file keeps its mode)."""
    try:
        mode = stat.S_IMODE(os.stat(like).st_mode) if like is not None else ordinary_mode(directory)
    except OSError:
        mode = ordinary_mode(directory)
    with contextlib.suppress(OSError, AttributeError, NotImplementedError):  # e.g. no fchmod on Windows
        if isinstance(fd_or_path, int):
            os.fchmod(fd_or_path, mode)
        else:
            os.chmod(fd_or_path, mode)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit fsync it and move it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            make_ordinary(fh.fileno(), like=target)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """True for the temp files :func:`atomic_open` leaves behind after a crash."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)
