"""The dataset's images: which rows are in it, their split and subset, and the ordered pass.

- :func:`select` is the first read of the state (every row, by class and rank): it counts
  statuses, leaves out good rows whose file has gone, and fills a :class:`DatasetIndex` with
  each class's first ``count`` good images (path, rank, URL) in search order.
- :class:`DatasetIndex` splits them (seeded, independent of the order images arrived in) and
  answers the writers' questions about the dataset (paths by split, URLs by rank, folders).
- :func:`dataset_rows` is the one ordered pass that feeds the writers: the dataset's rows with
  every field, by path, each with its split, in batches.

The index is a ``state.scratch_database`` and rows are streamed from the state (``RowStream``),
so memory stays flat in the dataset's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from asyncds.config import Config, SplitSpec, SubsetSpec
from asyncds.files import image_relpath, safe_relpath
from asyncds.state import CandidateRow, RowOrder, RowStream, Status, scratch_database

log = logging.getLogger(__name__)

_ADD_BATCH = 512  # rows per insert into the dataset index
BATCH_SIZE = 256  # (row, split) pairs per call of a writer's ``add``: one call, not one per row
OK_ONLY = frozenset({Status.OK})

# What assembly reads: the state as a stream (a job), or rows in memory (tests, tools).
Rows = Sequence[CandidateRow] | RowStream
# One item of the ordered pass: a dataset row with every field, and its split.
RowSplit = tuple[CandidateRow, str]


def images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def subset_count(n: int, percentage: float) -> int:
    """``percentage`` of ``n`` rounded to nearest (halves up), at least 1 when ``n >= 1``."""
    if n <= 0:
        return 0
    exact = n * Fraction(str(percentage)) / 100
    return min(n, max(1, math.floor(exact + Fraction(1, 2))))


def seeded_key(seed: str, path: str) -> bytes:
    """An image's place in a seeded random order: SHA-256 of ``"<seed>:<path>"``.

    Taking the *k* smallest keys of a class is a seeded random sample that depends on nothing
    but the seed and the paths: not on the order images arrived in, the machine or
    ``PYTHONHASHSEED``, and it needs no list of the class in memory (SQLite sorts by it).
    """
    return hashlib.sha256(f"{seed}:{path}".encode()).digest()


def relpath(row: CandidateRow) -> str:
    """A row's image, relative to the output folder (checked: it cannot escape it)."""
    return safe_relpath(row.path or image_relpath(row.label, row.photo_id))


# The URL rides along in the index (covered by image_rank) so that urls_data.json, in search
# order per class, is read from here rather than by another pass over the state.
_DATASET_SCHEMA = """
CREATE TABLE image (
    path TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    seq INTEGER NOT NULL,
    url TEXT,
    split TEXT NOT NULL DEFAULT 'train',
    in_subset INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX image_rank ON image (label, seq, url);
"""


@dataclass(frozen=True, slots=True)
class SplitCounts:
    """Per class (train, test) image counts, and the warnings a split gave."""

    counts: Mapping[str, tuple[int, int]]
    warnings: tuple[str, ...] = ()

    @property
    def train(self) -> int:
        return sum(train for train, _ in self.counts.values())

    @property
    def test(self) -> int:
        return sum(test for _, test in self.counts.values())


class DatasetIndex:
    """The dataset's images (relative paths by class and search rank) and their split.

    Kept in a ``state.scratch_database``, not in lists: assembly's memory does not grow with
    the dataset. Paths come back sorted (SQLite's BINARY collation compares UTF-8 bytes, which
    orders like Python compares ``str``).
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self._db = scratch_database(_DATASET_SCHEMA)
        self._db.create_function("seeded_key", 2, seeded_key, deterministic=True)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DatasetIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, label: str, seq: int, path: str, url: str | None = None) -> None:
        """A good image of ``label`` at search rank ``seq``; its path must be new."""
        self.add_many([(label, seq, path, url)])

    def add_many(self, images: Iterable[tuple[str, int, str, str | None]]) -> None:
        """:meth:`add` for many ``(label, seq, path, url)`` at once."""
        self._db.executemany(
            "INSERT INTO image (label, seq, path, url) VALUES (?, ?, ?, ?)", images
        )

    def keep_first(self, counts: Mapping[str, int]) -> None:
        """Keep, per class, the ``counts[label]`` images of lowest search rank (whatever order
        they were added in); forget the rest, and every image of a class not in ``counts``."""
        for label in {*self.labels, *self._labels()}:
            self._db.execute(
                "DELETE FROM image WHERE label = ? AND path NOT IN"
                " (SELECT path FROM image WHERE label = ? ORDER BY seq LIMIT ?)",
                (label, label, counts.get(label, 0)),
            )

    def _labels(self) -> list[str]:
        return [label for (label,) in self._db.execute("SELECT DISTINCT label FROM image")]

    def count(self, label: str | None = None) -> int:
        if label is None:
            (n,) = self._db.execute("SELECT COUNT(*) FROM image").fetchone()
        else:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM image WHERE label = ?", (label,)
            ).fetchone()
        return int(n)

    def split(self, spec: SplitSpec) -> SplitCounts:
        """Per class, the ``spec.test_count(n)`` images of smallest ``seeded_key(seed, path)``
        go to test, the others to train."""
        self._db.execute("UPDATE image SET split = 'train', in_subset = 0")
        counts: dict[str, tuple[int, int]] = {}
        warnings: list[str] = []
        for label in self.labels:
            n = self.count(label)
            k = spec.test_count(n)
            self._db.execute(
                "UPDATE image SET split = 'test' WHERE path IN (SELECT path FROM image"
                " WHERE label = ? ORDER BY seeded_key(?, path) LIMIT ?)",
                (label, str(spec.seed), k),
            )
            counts[label] = (n - k, k)
            if n == 0:
                warnings.append(f"{label}: no images, so nothing in train or test")
            elif spec.type == "absolute" and n <= int(spec.test_size):
                warnings.append(
                    f"{label}: only {images(n)}, not more than test_size {int(spec.test_size)}: "
                    f"half go to test ({k} test, {n - k} train)"
                )
            elif k == 0:
                warnings.append(f"{label}: only {images(n)}: none in test")
        return SplitCounts(counts, tuple(warnings))

    def subset(self, spec: SubsetSpec) -> SplitCounts:
        """``spec.percentage`` of each split and class (after :meth:`split`): the images of
        smallest ``seeded_key(f"{seed}:{split}", path)``."""
        self._db.execute("UPDATE image SET in_subset = 0")
        counts: dict[str, list[int]] = {}
        for label in self.labels:
            for i, name in enumerate(("train", "test")):
                (n,) = self._db.execute(
                    "SELECT COUNT(*) FROM image WHERE label = ? AND split = ?", (label, name)
                ).fetchone()
                m = subset_count(n, spec.percentage)
                self._db.execute(
                    "UPDATE image SET in_subset = 1 WHERE path IN (SELECT path FROM image"
                    " WHERE label = ? AND split = ? ORDER BY seeded_key(?, path) LIMIT ?)",
                    (label, name, f"{spec.seed}:{name}", m),
                )
                counts.setdefault(label, [0, 0])[i] = m
        return SplitCounts({label: (c[0], c[1]) for label, c in counts.items()})

    def paths(self, split: str | None = None, *, subset: bool = False) -> Iterator[str]:
        """The images' paths in sorted order: all, or of one split, or of its subset."""
        where, params = [], []
        if split is not None:
            where.append("split = ?")
            params.append(split)
        if subset:
            where.append("in_subset = 1")
        sql = "SELECT path FROM image"
        if where:
            sql += " WHERE " + " AND ".join(where)
        # A cursor of its own, read a chunk at a time while other statements run.
        for (path,) in self._db.execute(sql + " ORDER BY path", params):
            yield path

    def urls(self, label: str) -> Iterator[str]:
        """The image URLs of ``label``, by search rank."""
        for (url,) in self._db.execute(
            "SELECT url FROM image WHERE label = ? ORDER BY seq", (label,)
        ):
            yield url

    def sample(self, label: str, seed: str, k: int) -> list[str]:
        """A seeded sample of ``label``: its ``k`` paths of smallest ``seeded_key(seed, path)``,
        in that order (the same for the same seed and images, whatever order they came in)."""
        return [
            path
            for (path,) in self._db.execute(
                "SELECT path FROM image WHERE label = ? ORDER BY seeded_key(?, path) LIMIT ?",
                (label, seed, k),
            )
        ]

    def contains(self, path: str) -> bool:
        """Whether ``path`` is one of the dataset's images."""
        return (
            self._db.execute("SELECT 1 FROM image WHERE path = ?", (path,)).fetchone() is not None
        )

    def splits_by_path(self) -> Iterator[tuple[str, str]]:
        """``(path, split)`` of every image, by path."""
        yield from self._db.execute("SELECT path, split FROM image ORDER BY path")

    def folders(self) -> list[str]:
        """The class folders that hold at least one image, sorted."""
        return sorted(self._labels())


@dataclass(frozen=True, slots=True)
class Selection:
    """What the first pass counted: per class, the rows by status, and the good rows whose
    file has gone (left out of the dataset)."""

    by_status: Mapping[str, Counter[str]]
    missing: Counter[str]


def read_rows(
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
        chosen.sort(key=lambda r: (relpath(r), r.label, r.seq))
    else:
        chosen.sort(key=lambda r: (r.label, r.seq))
    return chosen


def select(rows: Rows, config: Config, out_dir: Path, dataset: DatasetIndex) -> Selection:
    """Pass 1 over every row, by class and rank: count statuses and fill ``dataset`` with each
    class's first ``count`` good images in search order. A good row whose file has gone is
    left out (a hand deletion is recorded as ``removed_by_user`` before assembly, so this is
    a file that went during the run); a surplus one takes its place."""
    by_status: dict[str, Counter[str]] = {spec.name: Counter() for spec in config.classes}
    missing: Counter[str] = Counter()
    batch: list[tuple[str, int, str, str | None]] = []
    for row in read_rows(rows):
        counts = by_status.get(row.label)
        if counts is None:
            continue
        counts[row.status] += 1
        if row.status != Status.OK:
            continue
        path = relpath(row)
        if not os.path.isfile(os.path.join(out_dir, path)):
            missing[row.label] += 1
            log.warning("%s is recorded as downloaded but missing: left out", path)
            continue
        batch.append((row.label, row.seq, path, row.url))
        if len(batch) >= _ADD_BATCH:
            dataset.add_many(batch)
            batch.clear()
    dataset.add_many(batch)
    dataset.keep_first({spec.name: spec.count for spec in config.classes})
    return Selection(by_status, missing)


def dataset_rows(rows: Rows, dataset: DatasetIndex) -> Iterator[list[RowSplit]]:
    """The ordered pass: the dataset's rows again, with every field, by path, each with its
    split, in batches of :data:`BATCH_SIZE`. A merge of the state's good rows with the index's
    entries, both in path order, so nothing but a batch is held."""
    expected = dataset.count()
    found = 0
    entries = dataset.splits_by_path()
    entry = next(entries, None)
    batch: list[RowSplit] = []
    for row in read_rows(rows, statuses=OK_ONLY, order="path"):
        if entry is None:
            break
        key = relpath(row)
        while entry is not None and entry[0] < key:
            entry = next(entries, None)
        if entry is not None and entry[0] == key:
            found += 1
            batch.append((row, entry[1]))
            if len(batch) >= BATCH_SIZE:
                yield batch
                batch = []
    if batch:
        yield batch
    if found != expected:  # the passes must agree; only a concurrent writer could part them
        raise RuntimeError(f"the state changed during assembly: {found} != {expected} rows")
