"""Assembly: turn the state into the dataset's artifacts (see docs/outputs.md for each format).

- :func:`apply_dedup` (async) records the dedup plan (``asyncds.dedup``) in the state and deletes
  the dropped images; the job alternates downloads and dedup until every class is full.
- :func:`select_images`, :func:`split_dataset`, :func:`subset_split` are pure and seeded.
- :func:`write_outputs` (blocking) writes every artifact atomically (a temporary name in the
  output folder, then ``os.replace``); :func:`assemble_outputs` runs it in a thread.

Memory stays flat in the dataset's size: rows are streamed from the state (``RowStream``) in a
few passes, never held all at once; only relative paths of the dataset's images are kept (the
split needs them), and the big artifacts are written as they are produced.

Only the images of the dataset (per class, the first ``count`` good ones in search order) are
listed and archived; surplus images left in a class folder stay there but are not part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import json
import logging
import math
import os
import random
import tarfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from asyncds.config import Config, SplitSpec, SubsetSpec
from asyncds.dedup import plan_dedup
from asyncds.state import (
    DEDUP_STATUSES,
    TEMP_MARKER,
    CandidateRow,
    RowOrder,
    RowStream,
    StateStore,
    Status,
    atomic_target,
    image_relpath,
    write_atomic,
)

log = logging.getLogger(__name__)

SPLIT_FILE = "train_test_split.json"
SUBSET_FILE = "train_test_split_subset.json"
URLS_FILE = "urls_data.json"
METADATA_FILE = "metadata.jsonl"
SUMMARY_TXT = "summary.txt"
SUMMARY_JSON = "summary.json"
ARCHIVE_FILE = "dataset.tgz"
# Every status that takes a candidate out of the dataset, in the order reports list them.
DROP_REASONS: tuple[str, ...] = tuple(
    s.value for s in Status if s not in (Status.OK, Status.PENDING)
)
OK_ONLY = frozenset({Status.OK})

# What write_outputs reads: the state as a stream (a job), or rows in memory (tests, tools).
Rows = Sequence[CandidateRow] | RowStream


class UnsafePathError(ValueError):
    """A path from the state that would escape the output folder."""


# -- run statistics and reports -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunStats:
    """What the job measured; the summary reports it."""

    wall_time_s: float
    api_calls: int
    images_fetched: int

    @property
    def images_per_s(self) -> float:
        return self.images_fetched / self.wall_time_s if self.wall_time_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ClassSummary:
    label: str
    requested: int
    candidates: int  # every candidate the search stored for the class
    good: int  # in the dataset
    train: int
    test: int
    dropped: Mapping[str, int]  # every drop reason, zeros included
    pending: int  # found but never downloaded
    surplus: int  # good but beyond ``count`` (left in the folder, not in the dataset)
    missing_files: int  # recorded good but the file is gone: left out
    search_exhausted: bool
    tags: tuple[str, ...]
    warning: str | None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "candidates": self.candidates,
            "good": self.good,
            "train": self.train,
            "test": self.test,
            "dropped": dict(self.dropped),
            "dropped_total": self.dropped_total,
            "pending": self.pending,
            "surplus": self.surplus,
            "missing_files": self.missing_files,
            "short": self.good < self.requested,
            "search_exhausted": self.search_exhausted,
            "tags": list(self.tags),
            "warning": self.warning,
        }


@dataclass(frozen=True, slots=True)
class AssemblyReport:
    classes: tuple[ClassSummary, ...]
    warnings: tuple[str, ...]
    paths: tuple[Path, ...]  # every artifact written

    @property
    def counts(self) -> dict[str, int]:
        """Images in the dataset per class."""
        return {c.label: c.good for c in self.classes}


@dataclass(frozen=True, slots=True)
class Split:
    """A train/test split: sorted relative POSIX paths, per-class counts, warnings."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # label -> (train, test)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "test": list(self.test)}


# -- pure steps -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassSelection:
    """A class's images in the dataset."""

    paths: tuple[str, ...]  # relative paths, in search order
    last_seq: int  # search rank of the last of them (0: none); later ``ok`` rows are surplus


def select_images(rows: Iterable[CandidateRow], config: Config) -> dict[str, ClassSelection]:
    """Per configured class (config order): its first ``count`` ``ok`` rows in search order.

    Whatever the input order, it holds no more than ``count`` (rank, path) pairs per class, so
    ``rows`` can be a stream of any length.
    """
    limits = {spec.name: spec.count for spec in config.classes}
    # Per class a max-heap on rank (ranks negated) of the best ``count`` rows so far.
    best: dict[str, list[tuple[int, str]]] = {name: [] for name in limits}
    for row in rows:
        if row.status != Status.OK or row.label not in limits:
            continue
        heap = best[row.label]
        if len(heap) < limits[row.label]:
            heapq.heappush(heap, (-row.seq, _relpath(row)))
        elif row.seq < -heap[0][0]:
            heapq.heapreplace(heap, (-row.seq, _relpath(row)))
    selected: dict[str, ClassSelection] = {}
    for label, heap in best.items():
        heap.sort(reverse=True)  # ascending rank
        selected[label] = ClassSelection(tuple(p for _, p in heap), -heap[-1][0] if heap else 0)
    return selected


def _shuffled(paths: Iterable[str], seed: str) -> list[str]:
    # Sort first so the input order cannot matter; a str seed is hashed with SHA-512 by
    # `random`, so it is stable across runs and interpreters (unlike hash()).
    ordered = sorted(paths)
    random.Random(seed).shuffle(ordered)
    return ordered


def split_dataset(selected: Mapping[str, Sequence[str]], spec: SplitSpec) -> Split:
    """Per class, a seeded shuffle of its sorted paths; the first ``spec.test_count(n)`` go to test.

    ``selected`` maps each label to its images' relative paths (``"cat/123.jpg"``).
    """
    train: list[str] = []
    test: list[str] = []
    counts: dict[str, tuple[int, int]] = {}
    warnings: list[str] = []
    for label, paths in selected.items():
        ordered = _shuffled(paths, f"{spec.seed}:{label}")
        n = len(ordered)
        k = spec.test_count(n)
        test += ordered[:k]
        train += ordered[k:]
        counts[label] = (n - k, k)
        if n == 0:
            warnings.append(f"{label}: no images, so nothing in train or test")
        elif spec.type == "absolute" and n <= int(spec.test_size):
            warnings.append(
                f"{label}: only {_images(n)}, not more than test_size {int(spec.test_size)}: "
                f"half go to test ({k} test, {n - k} train)"
            )
        elif k == 0:
            warnings.append(f"{label}: only {_images(n)}: none in test")
    return Split(tuple(sorted(train)), tuple(sorted(test)), counts, tuple(warnings))


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _label_of(path: str) -> str:
    return path.split("/", 1)[0]


def subset_count(n: int, percentage: float) -> int:
    """``percentage`` of ``n`` rounded to nearest (halves up), at least 1 when ``n >= 1``."""
    if n <= 0:
        return 0
    exact = n * Fraction(str(percentage)) / 100
    return min(n, max(1, math.floor(exact + Fraction(1, 2))))


def subset_split(split: Split, subset: SubsetSpec) -> Split:
    """``subset.percentage`` of each split and class, by a seeded shuffle; same format."""
    parts: dict[str, list[str]] = {"train": [], "test": []}
    counts: dict[str, list[int]] = {}
    for name, paths in (("train", split.train), ("test", split.test)):
        by_label: dict[str, list[str]] = {}
        for path in paths:
            by_label.setdefault(_label_of(path), []).append(path)
        for label in sorted(by_label):
            ordered = _shuffled(by_label[label], f"{subset.seed}:{name}:{label}")
            chosen = ordered[: subset_count(len(ordered), subset.percentage)]
            parts[name] += chosen
            counts.setdefault(label, [0, 0])[0 if name == "train" else 1] = len(chosen)
    ordered_counts = {label: (counts[label][0], counts[label][1]) for label in sorted(counts)}
    return Split(tuple(sorted(parts["train"])), tuple(sorted(parts["test"])), ordered_counts)


def safe_relpath(path: str) -> str:
    """``path`` if it is a plain relative POSIX path (no root, no ``..``), else UnsafePathError."""
    # Plain string checks (a root shows as an empty first part): this runs for every image,
    # and pathlib would intern every file name it parses.
    if not path or "\\" in path or any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafePathError(f"unsafe path in the state: {path!r}")
    return path


def _relpath(row: CandidateRow) -> str:
    return safe_relpath(row.path or image_relpath(row.label, row.photo_id))


def metadata_record(row: CandidateRow, split: str) -> dict[str, Any]:
    """One ``metadata.jsonl`` line for a dataset image."""
    from asyncds.flickr import LICENSES  # lazily: the table belongs to the Flickr module

    return {
        "file_name": _relpath(row),
        "label": row.label,
        "split": split,
        "photo_id": row.photo_id,
        "owner": row.owner,
        "ownername": row.ownername,
        "title": row.title,
        "license": row.license,
        "license_name": LICENSES.get(row.license, f"unknown license {row.license}"),
        "photo_page": f"https://www.flickr.com/photos/{row.owner}/{row.photo_id}",
        "url": row.url,
        "width": row.stored_width,
        "height": row.stored_height,
        "sha256": row.sha256,
    }


# -- dedup ----------------------------------------------------------------------------------


def _inside(out_root: Path, relpath: str) -> Path | None:
    """The file for ``relpath`` if it resolves inside a folder of ``out_root``, else None."""
    try:
        target = (out_root / safe_relpath(relpath)).resolve()
    except UnsafePathError:
        return None
    if target.parent == out_root or not target.is_relative_to(out_root):
        return None
    return target


def delete_dropped_files(out_dir: Path, rows: Iterable[CandidateRow]) -> int:
    """Delete the images of dedup-dropped rows (only inside ``out_dir``'s folders); how many."""
    out_root = out_dir.resolve()
    deleted = 0
    for row in rows:
        if row.status not in DEDUP_STATUSES:
            continue
        relpath = row.path or image_relpath(row.label, row.photo_id)
        target = _inside(out_root, relpath)
        if target is None:
            log.warning("not deleting %r: outside the class folders of %s", relpath, out_dir)
            continue
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
            deleted += 1
    return deleted


async def apply_dedup(state: StateStore, config: Config, out_dir: Path) -> dict[str, int]:
    """Plan dedup over the state, record the drops, delete their files.

    Drops are sticky (see ``asyncds.dedup``): nothing is ever restored, so deleting a dropped
    file is always safe. Statuses are committed before files are deleted, and every dropped
    row's file is deleted on each call, so a run killed in between finishes the job next time.
    Returns per configured class the number of good images after dedup.

    The state is streamed through the plan in search rank order, so only dedup's indexes
    grow with the state, never a list of its rows.
    """
    await state.flush()  # judge every outcome so far
    judged = state.stream(statuses={Status.OK, *DEDUP_STATUSES}, order="rank")
    decisions = await asyncio.to_thread(
        plan_dedup,
        judged,
        class_order=[spec.name for spec in config.classes],
        max_distance=config.dedup.phash_distance,
        cross_class=config.dedup.cross_class,
        ranked=True,
    )
    if decisions:
        await state.set_statuses((d.label, d.photo_id, d.status, d.reason) for d in decisions)
        by_status = Counter(d.status for d in decisions)
        log.info(
            "dedup dropped %d images (%s)",
            len(decisions),
            ", ".join(f"{s} {n}" for s, n in sorted(by_status.items())),
        )
        for d in decisions:
            log.debug("dedup: %s/%s %s: %s", d.label, d.photo_id, d.status, d.reason)
    # Read back after the commit: this round's drops and every earlier one.
    dropped = state.stream(statuses=DEDUP_STATUSES)
    deleted = await asyncio.to_thread(delete_dropped_files, out_dir, dropped)
    if deleted:
        log.debug("deleted %d dropped images", deleted)
    counts = await state.counts()
    return {spec.name: counts.get(spec.name, Counter())[Status.OK] for spec in config.classes}


# -- writing --------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode())


def _write_json_lists(path: Path, lists: Iterable[tuple[str, Iterable[str]]]) -> None:
    """``{key: [string, ...], ...}`` written as it is produced, byte for byte what
    :func:`_write_json` writes for the same mapping, without building it or its text."""
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("{")
        keys = 0
        for key, values in lists:
            f.write(f"{',' if keys else ''}\n {json.dumps(key, ensure_ascii=False)}: [")
            n = 0
            for value in values:
                f.write(f"{',' if n else ''}\n  {json.dumps(value, ensure_ascii=False)}")
                n += 1
            f.write("\n ]" if n else "]")
            keys += 1
        f.write("\n}\n" if keys else "}\n")


def _write_metadata(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # No trace of the builder's account, and plain permissions, whoever ran it.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_archive(path: Path, out_dir: Path, members: Iterable[str]) -> None:
    """``dataset.tgz`` of ``members`` (relative files), streamed one file at a time.

    Members are stored in sorted order under their relative names; each class folder gets a
    directory entry before its files.
    """
    names = sorted({safe_relpath(m) for m in members})
    folders = sorted({n.rpartition("/")[0] for n in names} - {""})
    # Both are sorted: merging them gives sorted entries without a list of them all.
    entries = heapq.merge(((n, False) for n in names), ((d, True) for d in folders))
    with (
        atomic_target(path) as tmp,
        open(tmp, "wb") as raw,
        # The name only goes into the gzip header: the final one, not the temporary one.
        tarfile.open(path.name, "w:gz", fileobj=raw, compresslevel=6) as tar,
    ):
        for name, is_folder in entries:
            source = os.path.join(out_dir, name)
            if is_folder:
                tar.add(source, arcname=name, recursive=False, filter=_normalised)
            else:
                tar.add(source, arcname=name, filter=_normalised)
            # TarFile remembers every member added (a TarInfo, and its inode to find hard links
            # among later files): ~7 MB per 10k images. Forget them: members are never read
            # back, and each image is its own file (a hard link would be stored as a copy).
            tar.members.clear()
            tar.inodes.clear()


def _clean_stale_temps(out_dir: Path, names: Iterable[str]) -> None:
    # Temporary artifacts of a run killed mid-assembly (the output lock excludes live ones).
    for name in names:
        for stale in out_dir.glob(f"{TEMP_MARKER}*-{name}"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _short_warning(
    label: str, good: int, requested: int, tags: Sequence[str], exhausted: bool
) -> str:
    if exhausted:
        return (
            f"{label}: {good} of {requested} — Flickr had no more candidates for tags "
            f"[{', '.join(tags)}]"
        )
    return (
        f"{label}: {good} of {requested} — the search stopped before Flickr ran out of "
        "candidates; run again to continue"
    )


def _read(
    rows: Rows,
    *,
    label: str | None = None,
    statuses: Collection[str] | None = None,
    order: RowOrder = "class",
) -> Iterable[CandidateRow]:
    """The matching rows in ``order``: a stream reads them from the state a chunk at a time
    (its own filters are replaced); rows in memory are filtered and sorted the same way."""
    if isinstance(rows, RowStream):
        wanted = None if statuses is None else frozenset(statuses)
        return dataclasses.replace(rows, label=label, statuses=wanted, order=order)
    chosen = [
        r
        for r in rows
        if (label is None or r.label == label) and (statuses is None or r.status in statuses)
    ]
    if order == "path":
        chosen.sort(key=lambda r: (_relpath(r), r.label, r.seq))
    else:
        chosen.sort(key=lambda r: (r.label, r.seq))
    return chosen


def write_outputs(
    rows: Rows,
    config: Config,
    out_dir: Path,
    stats: RunStats,
    *,
    exhausted: Mapping[str, bool] | None = None,
) -> AssemblyReport:
    """Write every artifact from the state's rows (blocking; run it in a thread).

    ``rows`` is read in three passes, each in the order its artifact needs: all rows by class
    and rank (counts, missing files, selection), the dataset's rows of each class by rank
    (``urls_data.json``), and the dataset's rows by path (``metadata.jsonl``). Between passes
    only the dataset's relative paths are held. ``exhausted`` says per class whether its search
    ran dry (for the short-class warning).
    """
    exhausted = exhausted or {}
    artifacts = (SPLIT_FILE, SUBSET_FILE, URLS_FILE, METADATA_FILE, SUMMARY_TXT, SUMMARY_JSON)
    _clean_stale_temps(out_dir, (*artifacts, ARCHIVE_FILE))
    labels = [spec.name for spec in config.classes]

    # Pass 1. A good row whose file has gone (deleted by hand) is left out; a surplus one takes
    # its place. Its (label, rank) is remembered so the later passes skip it too.
    by_status: dict[str, Counter[str]] = {label: Counter() for label in labels}
    missing: Counter[str] = Counter()
    gone: set[tuple[str, int]] = set()

    def present(candidates: Iterable[CandidateRow]) -> Iterator[CandidateRow]:
        for row in candidates:
            counts = by_status.get(row.label)
            if counts is None:
                continue
            counts[row.status] += 1
            if row.status != Status.OK:
                continue
            if not os.path.isfile(os.path.join(out_dir, _relpath(row))):
                missing[row.label] += 1
                gone.add((row.label, row.seq))
                log.warning("%s is recorded as downloaded but missing: left out", _relpath(row))
                continue
            yield row

    selected = select_images(present(_read(rows)), config)
    split = split_dataset({label: chosen.paths for label, chosen in selected.items()}, config.split)
    subset = subset_split(split, config.subset) if config.subset is not None else None
    in_test = set(split.test)

    def dataset_rows(label: str | None, order: RowOrder) -> Iterator[CandidateRow]:
        """The selected rows again, with every field: ``ok``, present, at most the last rank."""
        expected = sum(len(c.paths) for name, c in selected.items() if label in (None, name))
        found = 0
        for row in _read(rows, label=label, statuses=OK_ONLY, order=order):
            chosen = selected.get(row.label)
            if (
                chosen is not None
                and row.seq <= chosen.last_seq
                and (row.label, row.seq) not in gone
            ):
                found += 1
                yield row
        if found != expected:  # the passes must agree; only a concurrent writer could part them
            raise RuntimeError(f"the state changed during assembly: {found} != {expected} rows")

    written: list[Path] = []

    def emit(name: str, writer: Callable[[Path, Any], None], value: Any) -> None:
        target = out_dir / name
        writer(target, value)
        written.append(target)

    emit(SPLIT_FILE, _write_json_lists, split.to_json().items())
    if subset is not None:
        emit(SUBSET_FILE, _write_json_lists, subset.to_json().items())
    else:
        # A subset file from an earlier configuration would no longer match this split.
        (out_dir / SUBSET_FILE).unlink(missing_ok=True)
    # Pass 2, per class in config order; pass 3, by path: the order metadata.jsonl is in.
    emit(
        URLS_FILE,
        _write_json_lists,
        ((label, (r.url for r in dataset_rows(label, "class"))) for label in labels),
    )
    emit(
        METADATA_FILE,
        _write_metadata,
        (
            metadata_record(r, "test" if _relpath(r) in in_test else "train")
            for r in dataset_rows(None, "path")
        ),
    )

    classes: list[ClassSummary] = []
    for spec in config.classes:
        counts = by_status[spec.name]
        reasons = [*DROP_REASONS, *sorted(set(counts) - set(DROP_REASONS) - {"ok", "pending"})]
        good = len(selected[spec.name].paths)
        train_n, test_n = split.counts.get(spec.name, (0, 0))
        search_done = bool(exhausted.get(spec.name, False))
        classes.append(
            ClassSummary(
                label=spec.name,
                requested=spec.count,
                candidates=sum(counts.values()),
                good=good,
                train=train_n,
                test=test_n,
                dropped={reason: counts.get(reason, 0) for reason in reasons},
                pending=counts.get(Status.PENDING, 0),
                surplus=counts.get(Status.OK, 0) - missing[spec.name] - good,
                missing_files=missing[spec.name],
                search_exhausted=search_done,
                tags=spec.tags,
                warning=(
                    _short_warning(spec.name, good, spec.count, spec.tags, search_done)
                    if good < spec.count
                    else None
                ),
            )
        )
    warnings = [c.warning for c in classes if c.warning]
    warnings += [
        f"{c.label}: {_images(c.missing_files)} recorded as downloaded but missing from the "
        "folder: left out"
        for c in classes
        if c.missing_files
    ]
    warnings += split.warnings
    summary = _summary_json(classes, warnings, config, split, subset, stats)
    emit(SUMMARY_JSON, _write_json, summary)
    emit(SUMMARY_TXT, write_atomic, render_summary(summary).encode())

    artifacts_in_archive = [SPLIT_FILE, METADATA_FILE, SUMMARY_TXT, SUMMARY_JSON]
    if subset is not None:
        artifacts_in_archive.append(SUBSET_FILE)
    target = out_dir / ARCHIVE_FILE
    write_archive(target, out_dir, itertools.chain(split.train, split.test, artifacts_in_archive))
    written.append(target)
    for warning in warnings:
        log.warning("%s", warning)
    return AssemblyReport(tuple(classes), tuple(warnings), tuple(written))


async def assemble_outputs(
    state: StateStore, config: Config, out_dir: Path, stats: RunStats
) -> AssemblyReport:
    """Write every artifact from the state (the blocking work, streaming reads included, runs
    in a thread)."""
    await state.flush()  # the stream reads only what is committed
    exhausted = {
        spec.name: (await state.search_state(spec.name)).exhausted for spec in config.classes
    }
    report = await asyncio.to_thread(
        write_outputs, state.stream(), config, out_dir, stats, exhausted=exhausted
    )
    log.info(
        "dataset: %d images in %d classes written to %s",
        sum(report.counts.values()),
        len(report.classes),
        out_dir,
    )
    return report


# -- the summary ----------------------------------------------------------------------------

_TOTAL_KEYS = (
    "requested",
    "candidates",
    "good",
    "train",
    "test",
    "dropped_total",
    "pending",
    "surplus",
    "missing_files",
)


def _summary_json(
    classes: Sequence[ClassSummary],
    warnings: Sequence[str],
    config: Config,
    split: Split,
    subset: Split | None,
    stats: RunStats,
) -> dict[str, Any]:
    per_class = {c.label: c.to_json() for c in classes}
    totals: dict[str, Any] = {key: sum(c[key] for c in per_class.values()) for key in _TOTAL_KEYS}
    dropped_totals: Counter[str] = Counter()
    for c in classes:
        dropped_totals.update(c.dropped)
    totals["dropped"] = {reason: dropped_totals.get(reason, 0) for reason in dropped_totals}
    return {
        "classes": per_class,
        "totals": totals,
        "split": {
            "type": config.split.type,
            "test_size": config.split.test_size,
            "seed": config.split.seed,
            "description": config.split.describe(),
            "train": len(split.train),
            "test": len(split.test),
        },
        "subset": None
        if subset is None or config.subset is None
        else {
            "percentage": config.subset.percentage,
            "seed": config.subset.seed,
            "file": SUBSET_FILE,
            "train": len(subset.train),
            "test": len(subset.test),
        },
        "dedup": {
            "cross_class": config.dedup.cross_class,
            "phash_distance": config.dedup.phash_distance,
        },
        "run": {
            "wall_time_s": round(stats.wall_time_s, 3),
            "images_fetched": stats.images_fetched,
            "images_per_s": round(stats.images_per_s, 2),
            "api_calls": stats.api_calls,
        },
        "warnings": list(warnings),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers."""
    cells = [list(map(str, header)), *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]).rstrip())
    return lines


def render_summary(summary: Mapping[str, Any]) -> str:
    """``summary.txt``: the same facts as ``summary.json``, for people."""
    columns = ("requested", "candidates", "good", "train", "test", "dropped_total", "pending")
    header = ("class", "requested", "candidates", "good", "train", "test", "dropped", "pending")
    rows: list[list[Any]] = [
        [label, *(c[k] for k in columns)] for label, c in summary["classes"].items()
    ]
    totals = summary["totals"]
    rows.append(["total", *(totals[k] for k in columns)])
    lines = ["asyncds dataset summary", "", *_table(header, rows), ""]

    lines.append("dropped, by reason:")
    for label, c in summary["classes"].items():
        nonzero = [f"{reason} {n}" for reason, n in c["dropped"].items() if n]
        lines.append(f"  {label}: {', '.join(nonzero) if nonzero else 'none'}")
    leftovers = [
        f"  {label}: {_images(c['surplus'])} beyond the requested count (kept in the folder, "
        "not in the dataset)"
        for label, c in summary["classes"].items()
        if c["surplus"]
    ]
    if leftovers:
        lines += ["surplus:", *leftovers]
    lines.append("")

    split = summary["split"]
    lines.append(f"split: {split['description']} -> {split['train']} train, {split['test']} test")
    subset = summary["subset"]
    if subset:
        lines.append(
            f"subset: {subset['percentage']:g}% of each split and class, seed {subset['seed']}"
            f" -> {subset['train']} train, {subset['test']} test ({subset['file']})"
        )
    dedup = summary["dedup"]
    near = (
        f"near duplicates within {dedup['phash_distance']} bits"
        if dedup["phash_distance"]
        else "near duplicates not checked"
    )
    lines.append(f"dedup: cross-class copies {dedup['cross_class']}, {near}")
    run = summary["run"]
    lines.append(
        f"run: {run['wall_time_s']:.1f} s, {run['images_fetched']} images fetched "
        f"({run['images_per_s']:.1f} images/s), {run['api_calls']} API calls"
    )
    lines.append("")
    if summary["warnings"]:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in summary["warnings"]]
    else:
        lines.append("warnings: none")
    return "\n".join(lines) + "\n"
