"""A process of the imaging pool (:mod:`asyncds.pool`): imaging's pure functions, then the
write of what it made.

It is started as ``python -m asyncds.worker FD PARENT_PID`` and serves batches read from the
socket ``FD`` until it closes: each message is a 4-byte length and a pickle of
``(kind, items, options)``; the answer is ``("ok", results)`` or ``("error", exception)``.
``kind`` names one of :data:`BATCH_FUNCTIONS`.

The worker that holds an image's bytes also writes the stored file, atomically, so the bytes
never travel back to the main process and the loop never waits on a thread for the write: the
result is :class:`ImageResult` without ``data``.

A job without bytes *adopts* the file already at its target: a run killed after writing an
image but before committing its outcome left it there, and resume must not fetch it again.

Imports stay light on purpose (Pillow, numpy, the state module's file helpers): every worker
pays for them in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncds.files import read_file, write_atomic
from asyncds.imaging import (
    ImageOptions,
    ImageResult,
    contact_sheet,
    process_image_safely,
    stored_phash,
)

MISSING = "missing"  # an adoption job found no file: the candidate must be downloaded
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One image for the pool: downloaded ``data`` to process and store at ``target``, or no
    data to adopt the file already at ``target``."""

    target: str
    data: bytes | None = None


def run_batch(jobs: Sequence[ImageJob], options: ImageOptions) -> list[ImageResult]:
    """Process and store each job; results in the same order, without their bytes.

    One bad image is a status, never an exception. An ``OSError`` from writing (a full disk,
    a read-only folder) is not a fault of the image: it propagates and fails the whole batch.
    """
    return [_run_one(job, options) for job in jobs]


def _run_one(job: ImageJob, options: ImageOptions) -> ImageResult:
    data = job.data
    if data is None:
        try:
            data = read_file(job.target)
        except FileNotFoundError:
            return ImageResult(MISSING, "no stored file to adopt", None, 0, 0, "", 0, False)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(job.target)  # a link planted in a class folder is never read or kept
            return ImageResult(MISSING, "a link, not a stored file", None, 0, 0, "", 0, False)
    result = process_image_safely(data, options)
    if job.data is None and not result.ok:
        # Not a file this program wrote (atomic writes leave none half-written): fetch anew.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(job.target)
        return ImageResult(
            MISSING, f"stored file unusable ({result.reason})", None, 0, 0, "", 0, False
        )
    if job.data is not None and result.ok and result.data is not None:
        write_atomic(job.target, result.data)
    return dataclasses.replace(result, data=None)


def rehash_files(paths: Sequence[str], options: object = None) -> list[int | None]:
    """The perceptual hash of each stored file; None for one that is missing or unreadable."""
    hashes: list[int | None] = []
    for path in paths:
        try:
            hashes.append(stored_phash(read_file(path)))
        except Exception:  # its row keeps the hash it has
            hashes.append(None)
    return hashes


@dataclass(frozen=True, slots=True)
class SheetJob:
    """One contact sheet: the stored images (absolute paths, in grid order) and its file."""

    target: str
    sources: tuple[str, ...]
    cols: int
    cell: int


def render_sheets(jobs: Sequence[SheetJob], options: object = None) -> list[int]:
    """Render and write each contact sheet (atomically); the bytes of each. A source that is
    missing or unreadable is a grey cell; an ``OSError`` from the write fails the batch."""
    give_back_free_memory()
    sizes = []
    for job in jobs:
        images: list[bytes | None] = []
        for source in job.sources:
            try:
                images.append(read_file(source))
            except OSError:  # gone, or a link planted in a class folder (never read)
                images.append(None)
        data = contact_sheet(images, job.cols, job.cell)
        write_atomic(job.target, data)
        sizes.append(len(data))
    return sizes


def give_back_free_memory() -> None:
    """Return the heap freed since the last peak to the system (glibc ``malloc_trim``).

    A process's peak comes while it handles downloads; the heap they freed stays mapped, and
    the next phase's work would be added on top of that peak. A worker calls this before it
    draws contact sheets, the main process after each download round (before dedup and
    assembly): each phase then fits under the download's peak (benchmarks/README.md, s3).
    glibc only; elsewhere a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


BATCH_FUNCTIONS: dict[str, Callable[[Any, Any], list[Any]]] = {
    "image": run_batch,
    "rehash": rehash_files,
    "sheet": render_sheets,
}
_HEADER = struct.Struct("!I")


def serve(fd: int, parent_pid: int) -> None:
    """Answer batches on socket ``fd`` until it closes (the run ended or died)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        return  # the run died while this worker started, before the line above took effect
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle
    with socket.socket(fileno=fd) as sock, sock.makefile("rb") as incoming:
        while True:
            header = incoming.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            (size,) = _HEADER.unpack(header)
            kind, items, options = pickle.loads(incoming.read(size))
            try:
                answer: tuple[str, Any] = ("ok", BATCH_FUNCTIONS[kind](items, options))
            except Exception as exc:  # an OSError from a write: the run decides what to do
                answer = ("error", exc)
            try:
                data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # an exception that does not pickle
                data = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            try:
                sock.sendall(_HEADER.pack(len(data)) + data)
            except (BrokenPipeError, ConnectionResetError):
                return


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
