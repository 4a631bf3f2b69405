"""Assembly: turn the state into the dataset's artifacts (see docs/outputs.md for each format).

- :func:`apply_dedup` (async) records the dedup plan (``asyncds.dedup``) in the state and deletes
  the dropped images; the job alternates downloads and dedup until every class is full.
- :class:`DatasetIndex` selects the dataset's images and splits them (seeded, independent of
  the order images arrived in).
- :func:`write_outputs` (blocking) writes every artifact atomically (a temporary name in the
  output folder, then ``os.replace``); :func:`assemble_outputs` runs it in a thread.

Memory stays flat in the dataset's size: rows are streamed from the state (``RowStream``) in a
few passes, never held all at once; the dataset's paths and split live in a scratch SQLite file
(``DatasetIndex``), and the big artifacts are written as they are produced.

Only the images of the dataset (per class, the first ``count`` good ones in search order) are
listed and archived; surplus images left in a class folder stay there but are not part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import heapq
import json
import logging
import math
import os
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from asyncds.config import Config, SplitSpec, SubsetSpec
from asyncds.dedup import plan_dedup
from asyncds.files import (
    TEMP_MARKER,
    atomic_target,
    image_relpath,
    unconfigured_folders,
    write_atomic,
)
from asyncds.state import (
    DEDUP_STATUSES,
    CandidateRow,
    RowOrder,
    RowStream,
    StateStore,
    Status,
    scratch_database,
)

log = logging.getLogger(__name__)

# Bump when an unchanged state and config would give other artifacts (2: the split ranks by
# SHA-256 of seed:path): a folder assembled by an older version is then re-assembled.
ASSEMBLY_VERSION = 2
# dataset.tgz is a gzip stream of stored (level 0) blocks: JPEGs do not compress (239 MB in,
# 239 MB out at level 6, for 8 s of a 20,000-image run); it stays a valid .tgz for every tool.
ARCHIVE_LEVEL = 0
_ARCHIVE_BUFFER = 1 << 20
# Members are read without following links: a link planted in a class folder is not packed.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_ADD_BATCH = 512  # rows per insert into the dataset index
_ARCHIVE_CHUNK = 1 << 18  # a file larger than this (metadata.jsonl) is copied in chunks
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
    archive_s: float = 0.0  # time spent writing dataset.tgz

    @property
    def counts(self) -> dict[str, int]:
        """Images in the dataset per class."""
        return {c.label: c.good for c in self.classes}


# -- the dataset's images and their split ---------------------------------------------------


def _images(n: int) -> str:
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


_DATASET_SCHEMA = """
CREATE TABLE image (
    path TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    seq INTEGER NOT NULL,
    split TEXT NOT NULL DEFAULT 'train',
    in_subset INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX image_rank ON image (label, seq);
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

    def add(self, label: str, seq: int, path: str) -> None:
        """A good image of ``label`` at search rank ``seq``; its path must be new."""
        self.add_many([(label, seq, path)])

    def add_many(self, images: Iterable[tuple[str, int, str]]) -> None:
        """:meth:`add` for many ``(label, seq, path)`` at once."""
        self._db.executemany("INSERT INTO image (label, seq, path) VALUES (?, ?, ?)", images)

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
                    f"{label}: only {_images(n)}, not more than test_size {int(spec.test_size)}: "
                    f"half go to test ({k} test, {n - k} train)"
                )
            elif k == 0:
                warnings.append(f"{label}: only {_images(n)}: none in test")
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

    def splits_by_path(self) -> Iterator[tuple[str, str]]:
        """``(path, split)`` of every image, by path."""
        yield from self._db.execute("SELECT path, split FROM image ORDER BY path")

    def splits_by_seq(self, label: str) -> Iterator[tuple[int, str]]:
        """``(search rank, split)`` of every image of ``label``, by rank."""
        yield from self._db.execute(
            "SELECT seq, split FROM image WHERE label = ? ORDER BY seq", (label,)
        )

    def folders(self) -> list[str]:
        """The class folders that hold at least one image, sorted."""
        return sorted(self._labels())


def safe_relpath(path: str) -> str:
    """``path`` if it is a plain relative POSIX path (no root, no ``..``), else UnsafePathError."""
    # Plain string checks (a root shows as an empty first part): this runs for every image,
    # and pathlib would intern every file name it parses.
    if not path or "\\" in path or any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafePathError(f"unsafe path in the state: {path!r}")
    return path


def _seq(row: CandidateRow) -> int:
    return row.seq


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


# One encoder each, built once: json.dumps with ensure_ascii=False builds a new encoder per
# call, which was the largest cost of writing the manifests (60,000 calls at 20,000 images).
_json_record = json.JSONEncoder(ensure_ascii=False).encode
_json_string = json.encoder.encode_basestring  # what dumps(str, ensure_ascii=False) gives


def _write_json_lists(path: Path, lists: Iterable[tuple[str, Iterable[str]]]) -> None:
    """``{key: [string, ...], ...}`` written as it is produced, byte for byte what
    :func:`_write_json` writes for the same mapping, without building it or its text."""
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("{")
        keys = 0
        for key, values in lists:
            f.write(f"{',' if keys else ''}\n {_json_string(key)}: [")
            n = 0
            for value in values:
                f.write(f"{',' if n else ''}\n  {_json_string(value)}")
                n += 1
            f.write("\n ]" if n else "]")
            keys += 1
        f.write("\n}\n" if keys else "}\n")


def _write_metadata(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(_json_record(record) + "\n")


def write_archive(
    path: Path, out_dir: Path, files: Iterable[str], folders: Collection[str] = ()
) -> None:
    """``dataset.tgz`` of ``files`` and ``folders`` (relative paths), streamed one at a time.

    ``files`` must come sorted, each once, and is read once as it comes (it may be a cursor):
    one out of order is a ValueError. ``folders`` (the class folders: few) get a directory
    entry each. Every member is stored in sorted order under its relative name, owned by
    uid/gid 0 with no user names and plain permissions, whoever ran it.

    The gzip stream is level :data:`ARCHIVE_LEVEL` and the tar headers are built here rather
    than by ``tarfile.TarFile.add`` (see :func:`tar_header`): at 20,000 images that took 8 s
    at level 6 for no smaller file, and ``add`` alone costs about 0.2 ms per member.
    """

    def checked(names: Iterable[str]) -> Iterator[tuple[str, bool]]:
        last = ""
        for name in names:
            if name <= last:
                raise ValueError(f"archive members out of order: {name!r} after {last!r}")
            last = name
            yield safe_relpath(name), False

    dirs = sorted({safe_relpath(d) for d in folders})
    entries = heapq.merge(checked(files), ((d, True) for d in dirs))
    written = 0
    with (
        atomic_target(path) as tmp,
        open(tmp, "wb", buffering=_ARCHIVE_BUFFER) as raw,
        # The name only goes into the gzip header: the final one, not the temporary one.
        gzip.GzipFile(path.name, "wb", compresslevel=ARCHIVE_LEVEL, fileobj=raw) as gz,
    ):
        for name, is_folder in entries:
            source = os.path.join(out_dir, name)
            if is_folder:
                written += gz.write(tar_header(name, 0, int(os.stat(source).st_mtime), is_dir=True))
                continue
            fd = os.open(source, _READ_FLAGS)  # plain os calls: 20,000 of them
            try:
                st = os.fstat(fd)
                header = tar_header(name, st.st_size, int(st.st_mtime), is_dir=False)
                padding = bytes(-st.st_size % tarfile.BLOCKSIZE)
                if st.st_size <= _ARCHIVE_CHUNK:  # an image: one read, one write
                    data = os.read(fd, st.st_size + 1)
                    written += gz.write(b"".join((header, data, padding)))
                    copied = len(data)
                else:  # a large artifact (metadata.jsonl), in chunks
                    written += gz.write(header)
                    copied = 0
                    while chunk := os.read(fd, _ARCHIVE_CHUNK):
                        written += gz.write(chunk)
                        copied += len(chunk)
                    written += gz.write(padding)
            finally:
                os.close(fd)
            if copied != st.st_size:
                raise RuntimeError(f"{source} changed while it was being archived")
        # Two zero blocks end the archive; tarfile pads it to a whole record, and so do we.
        end = 2 * tarfile.BLOCKSIZE
        gz.write(bytes(end + -(written + end) % tarfile.RECORDSIZE))


def tar_header(name: str, size: int, mtime: int, *, is_dir: bool) -> bytes:
    """The 512-byte header ``tarfile`` writes (PAX format) for a member owned by uid/gid 0
    with no user names, mode 644 (755 for a folder): built directly for the usual short ASCII
    name, a tenth of the cost; any other name goes through ``tarfile.TarInfo``."""
    if is_dir:
        name += "/"
    mode = 0o755 if is_dir else 0o644
    if len(name) > 100 or not name.isascii() or not (0 <= size < 8**11 and 0 <= mtime < 8**11):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, mode
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    encoded = name.encode("ascii")
    size_field, mtime_field = b"%011o\0" % size, b"%011o\0" % mtime
    # The checksum is the sum of the header's bytes, the fixed ones summed once (_TAR_FIXED).
    fixed, head, tail = _TAR_FIXED[is_dir]
    checksum = fixed + sum(encoded) + sum(size_field) + sum(mtime_field)
    return b"".join(
        (encoded.ljust(100, b"\0"), head, size_field, mtime_field, b"%06o\0 " % checksum, tail)
    )


def _tar_fixed(is_dir: bool) -> tuple[int, bytes, bytes]:
    """For :func:`tar_header`: the sum of a header's fixed bytes (the checksum field counted as
    spaces), and those bytes before and after the size, mtime and checksum fields."""
    head = b"%07o\0" % (0o755 if is_dir else 0o644) + b"0000000\0" * 2  # mode, uid, gid
    tail = b"".join(
        (
            tarfile.DIRTYPE if is_dir else tarfile.REGTYPE,
            bytes(100),  # linkname
            tarfile.POSIX_MAGIC,
            bytes(64 + 16 + 167),  # uname, gname, devmajor, devminor, prefix, padding
        )
    )
    return sum(head) + sum(b" " * 8) + sum(tail), head, tail


_TAR_FIXED = {False: _tar_fixed(False), True: _tar_fixed(True)}


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
    the dataset's paths and split are kept in a :class:`DatasetIndex` (on disk), so memory does
    not grow with the dataset. ``exhausted`` says per class whether its search ran dry (for the
    short-class warning).
    """
    with DatasetIndex([spec.name for spec in config.classes]) as dataset:
        return _write_outputs(rows, config, out_dir, stats, dataset, exhausted or {})


def _write_outputs(
    rows: Rows,
    config: Config,
    out_dir: Path,
    stats: RunStats,
    dataset: DatasetIndex,
    exhausted: Mapping[str, bool],
) -> AssemblyReport:
    artifacts = (SPLIT_FILE, SUBSET_FILE, URLS_FILE, METADATA_FILE, SUMMARY_TXT, SUMMARY_JSON)
    _clean_stale_temps(out_dir, (*artifacts, ARCHIVE_FILE))
    labels = [spec.name for spec in config.classes]

    # Pass 1. A good row whose file has gone (deleted by hand) is left out; a surplus one takes
    # its place.
    by_status: dict[str, Counter[str]] = {label: Counter() for label in labels}
    missing: Counter[str] = Counter()
    batch: list[tuple[str, int, str]] = []
    for row in _read(rows):
        counts = by_status.get(row.label)
        if counts is None:
            continue
        counts[row.status] += 1
        if row.status != Status.OK:
            continue
        relpath = _relpath(row)
        if not os.path.isfile(os.path.join(out_dir, relpath)):
            missing[row.label] += 1
            log.warning("%s is recorded as downloaded but missing: left out", relpath)
            continue
        batch.append((row.label, row.seq, relpath))
        if len(batch) >= _ADD_BATCH:
            dataset.add_many(batch)
            batch.clear()
    dataset.add_many(batch)
    # The dataset: per class, its first ``count`` good images in search order.
    dataset.keep_first({spec.name: spec.count for spec in config.classes})
    split = dataset.split(config.split)
    subset = dataset.subset(config.subset) if config.subset is not None else None

    def dataset_rows(label: str | None, order: RowOrder) -> Iterator[tuple[CandidateRow, str]]:
        """The dataset's rows again, with every field, and the split each is in: a merge of
        the state's good rows with the dataset's entries, both in the same order."""
        expected = dataset.count(label)
        found = 0
        if order == "path":
            key: Callable[[CandidateRow], Any] = _relpath
            entries = dataset.splits_by_path()
        else:  # "class", one class: by search rank
            assert label is not None
            key, entries = _seq, dataset.splits_by_seq(label)
        entry = next(entries, None)
        for row in _read(rows, label=label, statuses=OK_ONLY, order=order):
            if entry is None:
                break
            k = key(row)
            while entry is not None and entry[0] < k:
                entry = next(entries, None)
            if entry is not None and entry[0] == k:
                found += 1
                yield row, entry[1]
        if found != expected:  # the passes must agree; only a concurrent writer could part them
            raise RuntimeError(f"the state changed during assembly: {found} != {expected} rows")

    written: list[Path] = []

    def emit(name: str, writer: Callable[[Path, Any], None], value: Any) -> None:
        target = out_dir / name
        writer(target, value)
        written.append(target)

    emit(SPLIT_FILE, _write_json_lists, [(n, dataset.paths(n)) for n in ("train", "test")])
    if subset is not None:
        emit(
            SUBSET_FILE,
            _write_json_lists,
            [(n, dataset.paths(n, subset=True)) for n in ("train", "test")],
        )
    else:
        # A subset file from an earlier configuration would no longer match this split.
        (out_dir / SUBSET_FILE).unlink(missing_ok=True)
    # Pass 2, per class in config order; pass 3, by path: the order metadata.jsonl is in.
    emit(
        URLS_FILE,
        _write_json_lists,
        ((label, (r.url for r, _ in dataset_rows(label, "class"))) for label in labels),
    )
    emit(
        METADATA_FILE,
        _write_metadata,
        (metadata_record(r, in_split) for r, in_split in dataset_rows(None, "path")),
    )

    classes: list[ClassSummary] = []
    for spec in config.classes:
        counts = by_status[spec.name]
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
    summary = _summary_json(classes, warnings, config, split, subset, stats, out_dir)
    emit(SUMMARY_JSON, _write_json, summary)
    emit(SUMMARY_TXT, write_atomic, render_summary(summary).encode())

    artifacts_in_archive = [SPLIT_FILE, METADATA_FILE, SUMMARY_TXT, SUMMARY_JSON]
    if subset is not None:
        artifacts_in_archive.append(SUBSET_FILE)
    target = out_dir / ARCHIVE_FILE
    files = heapq.merge(dataset.paths(), sorted(artifacts_in_archive))
    archive_started = time.perf_counter()
    write_archive(target, out_dir, files, dataset.folders())
    archive_s = time.perf_counter() - archive_started
    written.append(target)
    for warning in warnings:
        log.warning("%s", warning)
    return AssemblyReport(tuple(classes), tuple(warnings), tuple(written), archive_s)


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
    split: SplitCounts,
    subset: SplitCounts | None,
    stats: RunStats,
    out_dir: Path,
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
            "train": split.train,
            "test": split.test,
        },
        "subset": None
        if subset is None or config.subset is None
        else {
            "percentage": config.subset.percentage,
            "seed": config.subset.seed,
            "file": SUBSET_FILE,
            "train": subset.train,
            "test": subset.test,
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
        "unconfigured_folders": unconfigured_folders(out_dir, per_class),
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
    if summary.get("unconfigured_folders"):
        lines.append(
            f"folders of classes not in the config: {', '.join(summary['unconfigured_folders'])}"
            " (ImageFolder would take them for classes; --prune removes them)"
        )
    lines.append("")
    if summary["warnings"]:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in summary["warnings"]]
    else:
        lines.append("warnings: none")
    return "\n".join(lines) + "\n"
