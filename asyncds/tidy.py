"""Keep each class folder exactly the dataset's images of that class (the ImageFolder rule).

torchvision's ``ImageFolder`` (and ``datasets``' imagefolder without a card) take every image
file under a class folder, and fail on an empty one. So after the download rounds, before
assembly, the job:

- releases surplus images: a good image beyond its class's first ``count`` (with a file) in
  search order, which a lowered ``count`` leaves behind, goes back to ``pending`` (the state
  commits that first) and its file is deleted. A resume does not fetch it (its class is full);
  should ``count`` grow again, the pipeline takes pending candidates first, in search order, so
  the dataset stays "the first ``count`` good ones in search order";
- deletes the file of every pending candidate in a configured class: a released surplus whose
  deletion a kill interrupted, or a file written by a killed run for a candidate the class no
  longer needs (a pending candidate only ever adopts its file as a shortcut);
- removes the configured class folders left empty (a class that ended with no image).

A good image deleted by hand is recorded as ``removed_by_user`` when the job starts
(:mod:`asyncds.exclude`) and replaced; a file that disappears during the run leaves its row
``ok`` (assembly leaves it out with a warning, the next run replaces it), exactly as
:func:`asyncds.assembly.dataset.select` sees it, so this never changes which images the
dataset holds. Dedup-dropped files are deleted by :func:`asyncds.dedup.apply_dedup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncds.assembly.dataset import relpath
from asyncds.config import Config
from asyncds.files import UnsafePathError
from asyncds.state import CandidateRow, RowStream, StateStore, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TidyReport:
    released: int  # surplus images set back to pending
    deleted: int  # files deleted (released surplus and other pending candidates' files)
    removed_folders: tuple[str, ...]  # empty class folders removed

    @property
    def changed(self) -> bool:
        return bool(self.released or self.deleted or self.removed_folders)


def surplus(rows: Iterable[CandidateRow], config: Config, out_dir: Path) -> list[CandidateRow]:
    """Good rows with a file beyond their class's first ``count`` good rows with a file, in
    search order: the rule of ``assembly.dataset.select``, so never a dataset image."""
    limits = {spec.name: spec.count for spec in config.classes}
    kept: dict[str, int] = dict.fromkeys(limits, 0)
    found: list[CandidateRow] = []
    for row in rows:  # by class and search rank
        if row.label not in limits or row.status != Status.OK:
            continue
        if not os.path.isfile(os.path.join(out_dir, relpath(row))):
            continue  # missing: assembly warns about it; it is not surplus
        if kept[row.label] < limits[row.label]:
            kept[row.label] += 1
        else:
            found.append(row)
    return found


def delete_row_files(out_dir: Path, rows: Iterable[CandidateRow]) -> int:
    """Delete the files of these rows, only inside a folder of ``out_dir`` (never a file at its
    root: an artifact); how many (blocking). A row whose path is unsafe is skipped."""
    deleted = 0
    for row in rows:
        try:
            path = relpath(row)
        except UnsafePathError:
            continue
        if "/" not in path:
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(os.path.join(out_dir, path))
            deleted += 1
    return deleted


def _remove_empty_folders(out_dir: Path, labels: Iterable[str]) -> tuple[str, ...]:
    removed = []
    for label in labels:
        folder = out_dir / label
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            with contextlib.suppress(OSError):  # something appeared in it: leave it
                folder.rmdir()
                removed.append(label)
    return tuple(removed)


async def tidy_class_folders(state: StateStore, config: Config, out_dir: Path) -> TidyReport:
    """Release surplus images, delete pending candidates' files, remove empty class folders
    (see the module's docstring). Call it only when no download is in flight."""
    await state.flush()
    labels = {spec.name for spec in config.classes}
    rows: RowStream = state.stream(statuses={Status.OK}, order="class")
    extra = await asyncio.to_thread(surplus, rows, config, out_dir)
    if extra:
        # The state first: killed before the files go, the next call deletes them (pending).
        await state.set_statuses((r.label, r.photo_id, Status.PENDING, "") for r in extra)
        log.info("%d images beyond their class's count released (files deleted)", len(extra))
    pending = state.stream(statuses={Status.PENDING})
    ours = (row for row in pending if row.label in labels)  # read in the thread
    deleted = await asyncio.to_thread(delete_row_files, out_dir, ours)
    removed = await asyncio.to_thread(
        _remove_empty_folders, out_dir, [spec.name for spec in config.classes]
    )
    for label in removed:
        log.info("%s: no image, so no class folder", label)
    return TidyReport(len(extra), deleted, removed)
