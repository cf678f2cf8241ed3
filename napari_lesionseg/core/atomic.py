"""Atomic file writes: temp file in the same folder, fsync, ``os.replace``.

A crash at any moment leaves either the old file or the complete new one, never a torn file.
Temp files are named ``.<name>.<random>.tmp`` so that no reader mistakes them for results.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
def _temp_beside(target: Path, mode: str = "wb") -> Iterator[tuple[IO, str]]:
    """A temp file beside ``target``, flushed, fsynced and given ordinary permissions on clean
    exit; removed on error or after the caller has linked or moved it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh, tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit fsync it and move it onto ``path``."""
    target = Path(path)
    with _temp_beside(target, mode) as (fh, tmp):
        yield fh
        fh.flush()
        make_ordinary(fh.fileno(), like=target)
        os.fsync(fh.fileno())
        os.replace(tmp, target)
    fsync_dir(target.parent)


def create_new(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``, which must not exist: a fsynced temp file is hard-linked
    into place, which fails (``FileExistsError``) rather than replace a file, even when two
    processes race for the same name."""
    target = Path(path)
    with _temp_beside(target) as (fh, tmp):
        fh.write(data)
        fh.flush()
        make_ordinary(fh.fileno())
        os.fsync(fh.fileno())
        fh.close()
        os.link(tmp, target)
    fsync_dir(target.parent)


def atomic_copy(src: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Copy ``src`` onto ``path`` atomically (the copy is fsynced before it appears)."""
    with atomic_open(path) as fh, open(src, "rb") as sf:
        shutil.copyfileobj(sf, fh, 1 << 20)


def atomic_folder(path: str | os.PathLike[str], fill: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Make a folder atomically: ``fill(tmp)`` writes into a hidden temp folder beside ``path``,
    whose files are then fsynced and which is moved into place with one ``os.replace``. An
    existing folder is refused (``FileExistsError``) unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists; choose a new name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        make_ordinary(tmp, directory=True)
        fill(tmp)
        for f in tmp.iterdir():
            if f.is_file():
                make_ordinary(f)
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if target.exists():  # overwrite: move the old one aside first, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TMP_SUFFIX, dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def remove_stale_temp(folder: str | os.PathLike[str], older_than: float = 600.0) -> list[Path]:
    """Delete the temp files and folders an interrupted write left in ``folder`` (not below it).
    Only those untouched for ``older_than`` seconds go: a younger one may be another process's
    write in progress. Returns what was removed."""
    gone: list[Path] = []
    now = time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return gone
    for entry in entries:
        if not is_temp_file(entry):
            continue
        try:
            st = entry.lstat()
            if now - st.st_mtime < older_than:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(entry)
            else:
                entry.unlink()
            gone.append(entry)
        except OSError:
            continue
    return gone


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock across processes, held on the file ``path`` (created if missing):
    ``flock`` on POSIX, ``msvcrt.locking`` on Windows."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                    continue
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """True for the temp files and folders this module's writers leave behind after a crash."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)
