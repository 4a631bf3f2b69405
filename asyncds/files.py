"""The output folder's files: the lock, atomic writes, leftovers of a killed run, image paths.

Kept apart from :mod:`asyncds.state` (the SQLite state) because every imaging worker writes
its images through :func:`write_atomic` and imports only this (the state module would bring
asyncio, sqlite3 and threads into each worker's memory).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

LOCK_FILE = ".asyncds.lock"
TEMP_MARKER = ".part-"


class OutputLocked(Exception):
    """Another run holds the output folder."""


class OutputLock:
    """An exclusive ``flock`` on the output folder, released by the kernel if we are killed."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(
                f"another asyncds run (pid {holder}) is using {self.path.parent}; "
                "wait for it to finish or choose another --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def image_relpath(label: str, photo_id: str) -> str:
    """Where a class's image lives, relative to the output folder (POSIX, as manifests use)."""
    return f"{label}/{photo_id}.jpg"


@contextlib.contextmanager
def atomic_target(path: Path | str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (blocking).

    ``path`` never exists half-written. No fsync: the guarantee needed is against a killed
    process, which os.replace gives; a power cut may lose the last images, and resume then
    fetches them again.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_target` (blocking).

    Pool workers write every image with it, so the write is plain ``os`` calls, no Path or
    buffered file objects (those doubled the cost of a 13 kB write). A link at the temporary
    name is not followed.
    """
    with atomic_target(path) as tmp:
        write_file(tmp, data)


def temp_path(path: Path | str) -> str:
    """The temporary name beside ``path`` that a write goes to before it replaces ``path``;
    :func:`remove_temp_files` deletes what a killed run left under such names."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f"{TEMP_MARKER}{os.getpid()}-{name}")


def write_file(path: str, data: bytes) -> None:
    """Create or truncate ``path`` (not through a link) and write ``data`` to it (blocking)."""
    fd = os.open(path, _WRITE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW


def remove_temp_files(folders: Iterable[Path]) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(TEMP_MARKER) and entry.is_file():
                entry.unlink()
                removed += 1
    return removed
