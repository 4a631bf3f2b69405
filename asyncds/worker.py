"""What a process-pool worker runs: imaging's pure functions, then the write of what it made.

The pipeline hands the pool a batch of :class:`ImageJob` per task (one task per image cost
the event loop's thread about 0.13 ms of hand-off, as much as the download itself). The worker
that holds an image's bytes also writes the stored file, atomically, so the bytes never travel
back to the main process and the loop never waits on a thread for the write: the result is
:class:`ImageResult` without ``data``.

A job without bytes *adopts* the file already at its target: a run killed after writing an
image but before committing its outcome left it there, and resume must not fetch it again.

Imports stay light on purpose (Pillow, numpy, the state module's file helpers): every worker
pays for them in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncds.imaging import CORRUPT, ImageOptions, ImageResult, process_image, stored_phash
from asyncds.state import write_atomic

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
            with open(job.target, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return ImageResult(MISSING, "no stored file to adopt", None, 0, 0, "", 0, False)
    try:
        result = process_image(data, options)
    except Exception as exc:  # a bug in decoding one file must not lose the batch
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return ImageResult(CORRUPT, reason, None, 0, 0, "", 0, False)
    if job.data is None and not result.ok:
        # Not a file this program wrote (atomic writes leave none half-written): fetch anew.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(job.target)
        return ImageResult(
            MISSING, f"stored file unusable ({result.reason})", None, 0, 0, "", 0, False
        )
    if job.data is not None and result.ok and result.data is not None:
        write_atomic(Path(job.target), result.data)
    return dataclasses.replace(result, data=None)


def rehash_files(paths: Sequence[str]) -> list[int | None]:
    """The perceptual hash of each stored file; None for one that is missing or unreadable."""
    hashes: list[int | None] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                hashes.append(stored_phash(f.read()))
        except Exception:  # its row keeps the hash it has
            hashes.append(None)
    return hashes


def init_worker(parent_pid: int) -> None:
    """Pool initializer: a SIGKILLed run must not leave its workers behind (Linux).

    ``PR_SET_PDEATHSIG`` kills this worker when the run dies. A run killed while this worker
    was still starting is already gone by then, so check the parent too.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)


def started() -> int:
    """A no-op task: submitting one per worker starts them all at once (the pool starts
    workers on demand) while the search runs, instead of in the middle of the downloads."""
    return os.getpid()
