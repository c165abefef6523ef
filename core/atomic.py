"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every file the product writes for the user goes through here: the data is written to a temp
file in the same folder, flushed to disk, then renamed over the target. A full disk surfaces as
:class:`DiskFullError` naming the file, and the previous version stays intact.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import DiskFullError, UserError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file's path, for writers that take a file name; it replaces ``path`` only if
    the block completes, flushed to disk first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a saved file should read like any other
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        _discard(tmp)
        if e.errno in _NO_SPACE:
            raise DiskFullError(
                f"No space left on the disk while writing {path}. Free some space or choose "
                "another folder; the previous version of the file is untouched."
            ) from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"Cannot write {path}: {e.strerror}. Choose a folder you can write to.") from e
        raise
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` only if the block completes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log as a single ``write`` with O_APPEND, then fsync.

    A reader sees the file without the line or with all of it: the line goes in one system call
    at the end of the file (POSIX appends do not interleave), and readers of our logs skip a torn
    last line that only a power cut in the middle of that call could leave.
    """
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, _default_mode())
        try:
            end = os.fstat(fd).st_size
            if end and os.lseek(fd, end - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
                data = b"\n" + data  # after a torn last line: keep ours whole on a line of its own
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise DiskFullError(f"No space left on the disk while writing {path}. Free some space; "
                                "the lines already in it are untouched.") from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"Cannot write {path}: {e.strerror}. Choose a folder you can write to.") from e
        raise


def _default_mode() -> int:
    """0666 less the process umask: the mode ``open()`` would have given the file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDWR)  # a writable handle: Windows flushes only through one
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders can't be opened."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
