"""What assembly knows before any artifact is written, and what it reports after.

:class:`AssemblyContext` is all a writer sees besides the rows: the config, the folder, the
:class:`~asyncds.assembly.dataset.DatasetIndex` (paths, split, subset, URLs by rank), the
per-class :class:`ClassSummary` and the warnings, and the files the writers before it produced
(``outputs``: the archive packs those marked ``archived``). :class:`AssemblyReport` is what the
job gets back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncds.assembly.dataset import DatasetIndex, Rows, Selection, SplitCounts, images
from asyncds.config import Config
from asyncds.state import Status

if TYPE_CHECKING:
    from asyncds.worker import SheetJob

# Renders contact sheets (blocking) and returns each one's size: the job's sends them to the
# imaging pool on the event loop; without one they are rendered in the assembly's thread.
SheetRenderer = Callable[[Sequence["SheetJob"]], list[int]]

# Every status that takes a candidate out of the dataset, in the order reports list them.
DROP_REASONS: tuple[str, ...] = tuple(
    s.value for s in Status if s not in (Status.OK, Status.PENDING)
)


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
    # recorded good but the file is gone: left out. A job records a file deleted by hand as
    # removed_by_user (and replaces it) before assembly, so only a file gone during the run
    # counts here; the next run replaces it.
    missing_files: int
    search_exhausted: bool
    tags: tuple[str, ...]
    warning: str | None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def excluded(self) -> int:
        """Taken out by the exclude list (or deleted by hand in another class), replaced."""
        return self.dropped.get(Status.EXCLUDED, 0)

    @property
    def removed_by_hand(self) -> int:
        """Good images whose file the user deleted, noticed by a rerun and replaced."""
        return self.dropped.get(Status.REMOVED_BY_USER, 0)

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
            "excluded": self.excluded,
            "removed_by_hand": self.removed_by_hand,
            "short": self.good < self.requested,
            "search_exhausted": self.search_exhausted,
            "tags": list(self.tags),
            "warning": self.warning,
        }


@dataclass(frozen=True, slots=True)
class Output:
    """A file a writer produced, and whether it goes into ``dataset.tgz``."""

    path: Path
    archived: bool


@dataclass(slots=True)
class AssemblyContext:
    """Everything a writer may read; ``outputs``, ``summary_fields`` and ``warnings`` grow as
    writers finish (in registry order), so a later writer sees what earlier ones did."""

    config: Config
    out_dir: Path
    stats: RunStats
    dataset: DatasetIndex
    split: SplitCounts
    subset: SplitCounts | None
    classes: tuple[ClassSummary, ...]
    warnings: list[str]
    outputs: list[Output] = field(default_factory=list)
    # Extra top-level sections of summary.json a writer contributes (e.g. counts per license);
    # the summary writer adds them after its own, before "warnings".
    summary_fields: dict[str, Any] = field(default_factory=dict)
    # The state's rows, for a writer that reads more than the ordered pass (the report's
    # dropped images); None when assembly was given none.
    rows: Rows | None = None
    render_sheets: SheetRenderer | None = None


@dataclass(frozen=True, slots=True)
class AssemblyReport:
    classes: tuple[ClassSummary, ...]
    warnings: tuple[str, ...]
    paths: tuple[Path, ...]  # every artifact written
    archive_s: float = 0.0  # time spent writing dataset.tgz
    writer_s: Mapping[str, float] = field(default_factory=dict)  # each writer's own time

    @property
    def counts(self) -> dict[str, int]:
        """Images in the dataset per class."""
        return {c.label: c.good for c in self.classes}


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


def class_summaries(
    config: Config,
    selection: Selection,
    dataset: DatasetIndex,
    split: SplitCounts,
    exhausted: Mapping[str, bool],
) -> tuple[ClassSummary, ...]:
    """Per configured class, in config order: what the state holds and the dataset took."""
    classes: list[ClassSummary] = []
    for spec in config.classes:
        counts = selection.by_status[spec.name]
        missing = selection.missing[spec.name]
        reasons = [*DROP_REASONS, *sorted(set(counts) - set(DROP_REASONS) - {"ok", "pending"})]
        good = dataset.count(spec.name)
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
                surplus=counts.get(Status.OK, 0) - missing - good,
                missing_files=missing,
                search_exhausted=search_done,
                tags=spec.tags,
                warning=(
                    _short_warning(spec.name, good, spec.count, spec.tags, search_done)
                    if good < spec.count
                    else None
                ),
            )
        )
    return tuple(classes)


def class_warnings(classes: Sequence[ClassSummary], split: SplitCounts) -> list[str]:
    """Short classes, then missing files, then what the split said."""
    warnings = [c.warning for c in classes if c.warning]
    warnings += [
        f"{c.label}: {images(c.missing_files)} recorded as downloaded but missing from the "
        "folder: left out (the next run replaces them)"
        for c in classes
        if c.missing_files
    ]
    warnings += split.warnings
    return warnings
