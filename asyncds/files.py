"""The output folder's files: the lock, atomic writes, leftovers of a killed run, image paths.

Kept apart from :mod:`asyncds.state` (the SQLite state) because every imaging worker writes
its images through :func:`write_atomic` and imports only this (the state module would bring
asyncio, sqlite3 and threads into each worker's memory).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

LOCK_FILE = ".asyncds.lock"
TEMP_MARKER = ".part-"


class OutputLocked(Exception):
    """Another run holds the output folder."""


class OutputDirError(Exception):
    """The output folder cannot be used as it is; the message says why and what to do."""


class OutputLock:
    """An exclusive ``flock`` on the output folder, released by the kernel if we are killed."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Never through a link: a planted .asyncds.lock -> ~/.bashrc would be truncated.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputDirError(_link_message(self.path)) from None
            raise
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


class UnsafePathError(ValueError):
    """A path from the state that would escape the output folder."""


def safe_relpath(path: str) -> str:
    """``path`` if it is a plain relative POSIX path (no root, no ``..``), else UnsafePathError."""
    # Plain string checks (a root shows as an empty first part): this runs for every image,
    # and pathlib would intern every file name it parses.
    if not path or "\\" in path or any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafePathError(f"unsafe path in the state: {path!r}")
    return path


@contextlib.contextmanager
def atomic_target(path: Path | str, *, cleared: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (blocking).

    ``path`` never exists half-written. No fsync: the guarantee needed is against a killed
    process, which os.replace gives; a power cut may lose the last images, and resume then
    fetches them again. The temporary name is cleared first (a leftover, or a planted link:
    the write must create a fresh file), unless ``cleared=False`` says the caller creates it
    exclusively itself (:func:`write_file` does).
    """
    tmp = temp_path(path)
    if cleared:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            # os.write's ENOSPC names no file; the user needs to know which disk filled up.
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
        raise


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_target` (blocking).

    Pool workers write every image with it, so the write is plain ``os`` calls, no Path or
    buffered file objects (those doubled the cost of a 13 kB write). A link at the temporary
    name is not followed.
    """
    with atomic_target(path, cleared=False) as tmp:
        write_file(tmp, data)


def temp_path(path: Path | str) -> str:
    """The temporary name beside ``path`` that a write goes to before it replaces ``path``;
    :func:`remove_temp_files` deletes what a killed run left under such names."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f"{TEMP_MARKER}{os.getpid()}-{name}")


def write_file(path: str, data: bytes) -> None:
    """Create ``path`` as a new file and write ``data`` to it (blocking).

    Whatever was at ``path`` (a leftover of a killed run, a planted link, a hard link to a file
    elsewhere) is removed first, never followed or truncated. The name is removed only when the
    exclusive create finds it taken: an ``unlink`` of a name that is not there still takes the
    folder's lock, and the two imaging workers writing into one class folder queued on it (8 %
    of the machine's samples in a ``perf`` profile of s1; benchmarks/README.md).
    """
    try:
        fd = os.open(path, _WRITE_FLAGS, 0o666)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, _WRITE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_file(path: str) -> bytes:
    """The bytes of ``path``, not through a link (``OSError`` ELOOP for a link; blocking)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        return f.read()


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


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


def unconfigured_folders(out_dir: Path, class_names: Iterable[str]) -> list[str]:
    """Folders at the top of ``out_dir`` that are not a configured class, sorted.

    torchvision's ``ImageFolder`` takes every folder (hidden ones and links to folders too)
    for a class, so each of these would be one more class to it; ``--prune`` removes them.
    """
    wanted = set(class_names)
    try:
        with os.scandir(out_dir) as entries:
            return sorted(e.name for e in entries if e.is_dir() and e.name not in wanted)
    except FileNotFoundError:
        return []


def prune_folders(out_dir: Path, names: Iterable[str]) -> None:
    """Delete these folders of ``out_dir`` (a link is removed, never followed; blocking)."""
    for name in names:
        path = out_dir / name
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path)


def open_no_follow(path: Path | str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a link at ``path`` with :class:`OutputDirError`."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputDirError(_link_message(Path(path))) from None
        raise


def check_output_dir(out_dir: Path, names: Iterable[str]) -> None:
    """Make sure ``out_dir`` is a folder this run can write in, with no link among ``names``.

    ``names`` are the entries asyncds writes in the folder (class folders, state, log, lock,
    artifacts). A class folder that is a link to elsewhere would receive every image, and the
    archive would pack whatever it points at: refuse, with the fix in the message.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputDirError(
            f"the output folder {out_dir} exists but is not a folder; choose another --output-dir"
        ) from None
    except NotADirectoryError:
        raise OutputDirError(
            f"cannot create the output folder {out_dir}: a part of that path is a file; "
            "choose another --output-dir"
        ) from None
    except OSError as exc:
        raise OutputDirError(
            f"cannot create the output folder {out_dir}: {exc.strerror}; "
            "choose another --output-dir"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"the output folder {out_dir} is not writable; "
            "fix its permissions or choose another --output-dir"
        )
    for name in names:
        path = out_dir / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise OutputDirError(_link_message(path))


def _link_message(path: Path) -> str:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return (
        f"{path} is a symbolic link{target}; asyncds writes only inside its output folder and "
        "never through a link: remove the link (or choose another --output-dir)"
    )
