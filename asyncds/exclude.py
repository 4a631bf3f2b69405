"""The user's fixes: the exclude list and good images deleted by hand.

A job calls :func:`apply_removals` first, before it decides anything (dedup, downloads,
"nothing to do"), so a fix is noticed whether or not the config changed:

1. **Deleted by hand.** Each configured class folder is listed once (one ``scandir``) and
   compared with the class's ``ok`` rows: a good image whose file is gone becomes
   ``removed_by_user``. A crash never leaves an ``ok`` row without its file (an image is
   written before its outcome is committed, and dedup and tidy change a row before they
   delete its file): a file missing after a crash belongs to a row that is still ``pending``,
   which a resume adopts or downloads again, so it is not taken for a deletion.
2. **Excluded.** Every ``ok`` or ``pending`` row, in any class, whose photo id is in the
   exclude list (``Config.exclude``) or was removed by hand (in any class) becomes
   ``excluded``; the state is committed first, then the files of excluded rows are deleted
   (again on every run, so a run killed in between finishes the job).
3. An id taken off the exclude list goes back to ``pending``: it is downloaded again only when
   its class needs one more image (like a released surplus image).

The ids of both kinds are ``blocked``: the pipeline stores a candidate with such an id as
``excluded`` when a search finds it (:meth:`asyncds.state.StateStore.add_page`), so it is
never downloaded again, in any class. The rows are kept (the summary counts them), and the
freed places are filled from further search results like any other drop: "the first
``count`` good ones in search order" among the candidates not excluded or removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from asyncds.assembly.dataset import relpath
from asyncds.config import Config
from asyncds.files import UnsafePathError
from asyncds.state import CandidateRow, StateStore, Status
from asyncds.tidy import delete_row_files

log = logging.getLogger(__name__)

EXCLUDED_REASON = "in the exclude list"
REMOVED_REASON = "deleted from its class folder by hand"
# The state's meta key holding the fingerprint of the last assembly (asyncds.job).
ASSEMBLED_META = "assembled"


def removed_elsewhere(label: str) -> str:
    """Why a row is excluded whose photo was deleted by hand from ``label``'s folder."""
    return f"deleted by hand from {label}/"


@dataclass(frozen=True, slots=True)
class Removals:
    """What :func:`apply_removals` found and recorded."""

    removed: Mapping[str, int]  # per class: good images found deleted by hand now
    excluded: int  # rows newly excluded
    restored: int  # rows back to pending: their id left the exclude list
    deleted: int  # files deleted (of excluded rows)
    blocked: Mapping[str, str] = field(default_factory=dict)  # photo id -> why

    @property
    def changed(self) -> bool:
        """Whether the dataset changed: the artifacts must be written again."""
        return bool(sum(self.removed.values()) or self.excluded or self.restored or self.deleted)


def _folder_names(folder: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def find_deleted(
    rows: Iterable[CandidateRow], out_dir: Path, skip: frozenset[str] = frozenset()
) -> list[CandidateRow]:
    """The ``ok`` rows whose file is gone (blocking). Each folder is listed once and the
    rows' names looked up in that listing; only a row stored outside its class folder (an
    unusual path) costs a stat of its own. Rows whose photo id is in ``skip`` are ignored."""
    listings: dict[str, set[str]] = {}
    gone: list[CandidateRow] = []
    for row in rows:
        if row.status != Status.OK or row.photo_id in skip:
            continue
        try:
            path = relpath(row)
        except UnsafePathError:
            continue  # assembly leaves such a row out; it is not the user's doing
        folder, _, name = path.rpartition("/")
        if folder == row.label:
            names = listings.get(folder)
            if names is None:
                names = listings[folder] = _folder_names(os.path.join(out_dir, folder))
            present = name in names
        else:
            present = os.path.isfile(os.path.join(out_dir, path))
        if not present:
            gone.append(row)
    return gone


async def apply_removals(state: StateStore, config: Config, out_dir: Path) -> Removals:
    """Record hand deletions and the exclude list in the state, delete excluded images, and
    return what changed with the ids the pipeline must never download (module docstring)."""
    await state.flush()
    removed: Counter[str] = Counter()
    gone: list[CandidateRow] = []
    for spec in config.classes:
        ok = state.stream(label=spec.name, statuses={Status.OK})
        found = await asyncio.to_thread(find_deleted, ok, out_dir, config.exclude)
        gone += found
        if found:
            removed[spec.name] = len(found)
            log.info(
                "%s: %d good images were deleted by hand: recorded, they will be replaced",
                spec.name,
                len(found),
            )
    stale = False

    async def mark_stale() -> None:
        # Before the first change is committed: killed before the artifacts are written again,
        # the next run still sees them as out of date (the job re-assembles).
        nonlocal stale
        if not stale:
            await state.set_meta(ASSEMBLED_META, "")
            stale = True

    if gone:
        await mark_stale()
        await state.set_statuses(
            (r.label, r.photo_id, Status.REMOVED_BY_USER, REMOVED_REASON) for r in gone
        )

    blocked: dict[str, str] = {}
    for row in await state.rows(status=Status.REMOVED_BY_USER):
        blocked.setdefault(row.photo_id, removed_elsewhere(row.label))
    blocked.update(dict.fromkeys(config.exclude, EXCLUDED_REASON))

    newly = [
        r for r in await state.rows_of_photos(blocked) if r.status in (Status.OK, Status.PENDING)
    ]
    restore = [
        r
        for r in await state.rows(status=Status.EXCLUDED)
        if r.reason == EXCLUDED_REASON and r.photo_id not in blocked
    ]
    updates = [(r.label, r.photo_id, Status.EXCLUDED, blocked[r.photo_id]) for r in newly]
    updates += [(r.label, r.photo_id, Status.PENDING, "") for r in restore]
    if updates:  # the state first: killed before the files go, the next run deletes them
        await mark_stale()
        await state.set_statuses(updates)
    if newly:
        log.info("%d images excluded (the exclude list): they will be replaced", len(newly))
    if restore:
        log.info("%d images no longer excluded: candidates again", len(restore))
    excluded_rows = await state.rows(status=Status.EXCLUDED)
    deleted = await asyncio.to_thread(delete_row_files, out_dir, excluded_rows)
    return Removals(
        removed=dict(removed),
        excluded=len(newly),
        restored=len(restore),
        deleted=deleted,
        blocked=blocked,
    )
