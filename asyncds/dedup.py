"""Deduplication: which downloaded images must leave the dataset, and why; and applying that.

A plan (:func:`plan_dedup`) reads rows and returns decisions; it touches no image and no state.
:func:`apply_dedup` (async, the job's step between download rounds) plans over the state,
records the drops in it and deletes the dropped images. What it has seen
so far lives in a :class:`SeenIndex`, a private temporary SQLite file, so planning a state of
any size takes a few MB of memory.

Three kinds of copy are found, in this order of precedence:

1. the same Flickr photo id under two or more classes (``cross_class``);
2. the same stored bytes (sha256): within a class ``duplicate``, across classes ``cross_class``;
3. perceptually near images (64-bit pHash within ``max_distance`` bits; 0 disables it): within
   a class ``near_duplicate``, across classes ``cross_class``.

Cross-class policy: ``drop`` removes every copy (an image filed under two labels is ambiguous
for classification, so neither class gets it); ``keep-first`` keeps the first copy in the
processing order and drops the others.

Processing order: rows are visited by ``(seq, class position in class_order, label, photo id)``,
so the image found earlier in its class's search wins, classes interleaved fairly; the result
does not depend on the order the rows are given in.

Re-running (the job alternates downloads and dedup until classes are full): drops are sticky.
A row that already carries a dedup status stays dropped and is never returned again (its file is
deleted, so it could not come back); it still takes part in matching: its photo id is always
remembered, and under ``drop`` a ``cross_class`` row keeps its image "ambiguous", so later copies
in any class are dropped too. Plans therefore only ever add drops, and a plan is a function of
the rows it is given alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from asyncds.files import UnsafePathError, image_relpath, safe_relpath
from asyncds.state import DEDUP_STATUSES, CandidateRow, StateStore, Status, scratch_database

if TYPE_CHECKING:
    from asyncds.config import Config

log = logging.getLogger(__name__)

HASH_BITS = 64
CrossClassPolicy = Literal["drop", "keep-first"]
_MASK = (1 << HASH_BITS) - 1
_NO_BOUND = (1 << 63) - 1  # the largest SQLite integer


def _signed(value: int) -> int:
    """``value`` (64 bits) as SQLite's signed 64-bit integer: the same bits, two's complement."""
    return value - (1 << HASH_BITS) if value >> (HASH_BITS - 1) else value


def _chunks(max_distance: int) -> list[tuple[int, int]]:
    """(shift, mask) of the ``max_distance + 1`` near-equal parts a 64-bit hash is cut into."""
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be in [0, {HASH_BITS - 1}], got {max_distance}")
    n_chunks = max_distance + 1
    base, extra = divmod(HASH_BITS, n_chunks)
    chunks, shift = [], 0
    for i in range(n_chunks):
        width = base + (1 if i < extra else 0)
        chunks.append((shift, (1 << width) - 1))
        shift += width
    return chunks


_INDEX_SCHEMA = """
CREATE TABLE entry (
    n INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    photo_id TEXT NOT NULL,
    path TEXT NOT NULL,
    dropped INTEGER NOT NULL,
    ambiguous INTEGER NOT NULL,
    sha256 TEXT  -- NULL unless the entry's image is indexed
);
CREATE INDEX entry_photo ON entry (photo_id, n);
CREATE INDEX entry_sha ON entry (sha256, n) WHERE sha256 IS NOT NULL;
CREATE TABLE part (
    part INTEGER, value INTEGER, n INTEGER, hash INTEGER, PRIMARY KEY (part, value, n)
) WITHOUT ROWID;
"""
_ENTRY = "SELECT label, photo_id, path, dropped, ambiguous, n FROM entry"


class SeenIndex:
    """What a plan has processed so far, in a private on-disk SQLite database.

    Dicts of every photo id, sha256 and hash held ~28 MB of Python objects at 50,000 images;
    here the plan's memory is SQLite's page cache (a few MB) whatever the state's size, for
    about twice the time (2 s at 50,000). The database is a ``state.scratch_database``: it
    lives as long as one plan and leaves nothing behind.

    Entries are numbered in the order they are added, and every lookup returns the earliest
    match. Near-duplicates use multi-index hashing: a hash is cut into ``max_distance + 1``
    parts, and by pigeonhole two hashes within ``max_distance`` bits agree exactly on at least
    one part. A query reads only the hashes sharing a part value with it (indexed, in entry
    order) and confirms each by the popcount of the XOR: cost follows the bucket sizes, not
    the number of hashes stored.
    """

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self._chunks = _chunks(max_distance)
        self._db = scratch_database(_INDEX_SCHEMA)
        self._count = 0
        # Most rows copy nothing: these answer "never seen" without a query, in fixed memory.
        self._photos = _KeyFilter()
        self._shas = _KeyFilter()
        # All parts of a hash in one query, earliest entry first.
        self._near_sql = (
            " UNION ALL ".join(
                ["SELECT n, hash FROM part WHERE part = ? AND value = ?"] * len(self._chunks)
            )
            + " ORDER BY n"
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SeenIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

    def add(self, entry: _Entry, *, sha256: str = "", phash: int | None = None) -> _Entry:
        """Store ``entry``, numbered after the last one; with ``sha256`` and/or ``phash``, its
        image is indexed too (a later copy of it then matches this entry)."""
        entry.n = self._count
        self._count += 1
        self._photos.add(entry.photo_id)
        if sha256:
            self._shas.add(sha256)
        self._db.execute(
            "INSERT INTO entry VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.n,
                entry.label,
                entry.photo_id,
                entry.path,
                entry.dropped,
                entry.ambiguous,
                sha256 or None,
            ),
        )
        if phash is not None and self.max_distance > 0:
            self.add_hash(entry.n, phash)
        return entry

    def save(self, entry: _Entry) -> None:
        """Write back an entry's flags after they changed."""
        self._db.execute(
            "UPDATE entry SET dropped = ?, ambiguous = ? WHERE n = ?",
            (entry.dropped, entry.ambiguous, entry.n),
        )

    def add_hash(self, n: int, h: int) -> None:
        """Index the 64-bit hash ``h`` under number ``n`` (lookups prefer the lowest ``n``)."""
        stored = _signed(h)
        self._db.executemany(
            "INSERT INTO part VALUES (?, ?, ?, ?)",
            [
                (i, _signed((h >> shift) & mask), n, stored)
                for i, (shift, mask) in enumerate(self._chunks)
            ],
        )

    # -- lookups -------------------------------------------------------------------------

    def by_photo(self, photo_id: str) -> _Entry | None:
        """The first entry of this photo id, in any class."""
        if not self._photos.may_hold(photo_id):
            return None
        return self._first(f"{_ENTRY} WHERE photo_id = ? ORDER BY n LIMIT 1", photo_id)

    def by_sha(self, sha256: str) -> _Entry | None:
        """The first entry whose image was indexed with these bytes."""
        if not self._shas.may_hold(sha256):
            return None
        return self._first(f"{_ENTRY} WHERE sha256 = ? ORDER BY n LIMIT 1", sha256)

    def near(self, h: int) -> tuple[_Entry, int] | None:
        """The earliest indexed entry within ``max_distance`` bits of ``h``, and the distance."""
        hit = self.find_hash(h)
        if hit is None:
            return None
        entry = self._first(f"{_ENTRY} WHERE n = ?", hit[0])
        assert entry is not None, "a hash is only indexed with its entry"
        return entry, hit[1]

    def _first(self, sql: str, key: object) -> _Entry | None:
        found = self._db.execute(sql, (key,)).fetchone()
        if found is None:
            return None
        label, photo_id, path, dropped, ambiguous, n = found
        return _Entry(label, photo_id, path, bool(dropped), bool(ambiguous), n)

    def find_hash(self, h: int) -> tuple[int, int] | None:
        """(number, distance) of the earliest hash added within ``max_distance`` of ``h``."""
        limit = self.max_distance
        params: list[int] = []
        for i, (shift, mask) in enumerate(self._chunks):
            params += (i, _signed((h >> shift) & mask))
        # The hashes sharing a part with h, earliest first: the first close one is the answer.
        candidates = self._db.execute(self._near_sql, params)
        # A generator, not a loop with a break: this is the plan's inner loop.
        hit = next((r for r in candidates if ((r[1] ^ h) & _MASK).bit_count() <= limit), None)
        return None if hit is None else (hit[0], ((hit[1] ^ h) & _MASK).bit_count())


class _KeyFilter:
    """A two-probe Bloom filter of strings in 1 MiB: False means never added."""

    _BITS = 1 << 23

    def __init__(self) -> None:
        self._bits = bytearray(self._BITS // 8)

    def _probes(self, key: str) -> tuple[int, int]:
        h = hash(key)
        return h & (self._BITS - 1), (h >> 32) & (self._BITS - 1)

    def add(self, key: str) -> None:
        for bit in self._probes(key):
            self._bits[bit >> 3] |= 1 << (bit & 7)

    def may_hold(self, key: str) -> bool:
        return all(self._bits[bit >> 3] & (1 << (bit & 7)) for bit in self._probes(key))


@dataclass(frozen=True, slots=True)
class Decision:
    """One row to drop: its new status (a dedup status) and a reason naming the copy it matched."""

    label: str
    photo_id: str
    status: str
    reason: str


@dataclass(slots=True)
class _Entry:
    """A processed row as the index sees it: what a reason names, and what became of it."""

    label: str
    photo_id: str
    path: str  # stored path when it is not the usual one (see ``where``), else ""
    dropped: bool
    ambiguous: bool = False  # found under several classes with the `drop` policy: poisons copies
    n: int = -1  # its number in the index, once added

    @classmethod
    def of(cls, row: CandidateRow, *, dropped: bool, ambiguous: bool = False) -> _Entry:
        usual = not row.path or row.path == image_relpath(row.label, row.photo_id)
        return cls(row.label, row.photo_id, "" if usual else row.path, dropped, ambiguous)

    @property
    def where(self) -> str:
        return self.path or image_relpath(self.label, self.photo_id)


@dataclass(frozen=True, slots=True)
class _Match:
    entry: _Entry
    kind: Literal["photo", "sha", "phash"]
    distance: int = 0


def _reason(match: _Match, *, other: _Entry) -> str:
    """Why a row matched ``other`` (the entry it collided with)."""
    if match.kind == "photo":
        return f"photo also found under {other.label}"
    if match.kind == "sha":
        return f"same image as {other.where}"
    return f"near-duplicate (distance {match.distance}) of {other.where}"


def _rank_checked(rows: Iterable[CandidateRow]) -> Iterator[CandidateRow]:
    """``rows``, or a ValueError at the first row whose rank is lower than the one before."""
    last: CandidateRow | None = None
    for row in rows:
        if last is not None and row.seq < last.seq:
            raise _out_of_rank(row, last.seq)
        yield row
        last = row


def _out_of_rank(row: CandidateRow, rank: int) -> ValueError:
    return ValueError(
        f"rows are not in search rank order: {row.label}/{row.photo_id} "
        f"(rank {row.seq}) after rank {rank}"
    )


def _in_rank_order(
    rows: Iterable[CandidateRow], key: Callable[[CandidateRow], tuple[int, int, str, str]]
) -> Iterator[CandidateRow]:
    """Rows that come by ascending ``seq``, each run of one ``seq`` put in processing order."""
    run: list[CandidateRow] = []  # one rank: at most a row per class from a state
    for row in rows:
        if run and row.seq != run[0].seq:
            if row.seq < run[0].seq:
                raise _out_of_rank(row, run[0].seq)
            yield from sorted(run, key=key)
            run.clear()
        run.append(row)
    yield from sorted(run, key=key)


def plan_dedup(
    rows: Iterable[CandidateRow],
    *,
    class_order: Sequence[str],
    max_distance: int,
    cross_class: CrossClassPolicy | str,
    ranked: bool = False,
) -> list[Decision]:
    """The rows that must be dropped now, sorted by (label, photo id).

    Only ``ok`` rows can be dropped; rows with a dedup status are earlier drops (see the module
    docstring); rows of other statuses and of classes not in ``class_order`` are ignored.
    With ``ranked``, ``rows`` already come by ascending ``seq`` (a stream from the state) and
    are planned as they arrive instead of being sorted first; a row out of order is a
    ValueError. Either way the plan is the same.

    ``rows`` that can be read twice (not an iterator) are read twice (:func:`copy_suspects`
    first): they must give the same rows both times. A state's ``RowStream`` takes a snapshot
    per read, so nothing may write the state in between (``apply_dedup`` flushes first and
    runs between download rounds).
    """
    if cross_class not in ("drop", "keep-first"):
        raise ValueError(f"cross_class must be 'drop' or 'keep-first', got {cross_class!r}")
    poison = cross_class == "drop"
    position = {label: i for i, label in enumerate(class_order)}

    def order(r: CandidateRow) -> tuple[int, int, str, str]:
        return (r.seq, position[r.label], r.label, r.photo_id)

    def relevant(rows: Iterable[CandidateRow]) -> Iterator[CandidateRow]:
        return (
            r
            for r in rows
            if r.label in position and (r.status == Status.OK or r.status in DEDUP_STATUSES)
        )

    candidates = relevant(rows)
    if not isinstance(rows, Iterator):
        # Rows that can be read twice (a list, a state's RowStream): a first, cheap pass finds
        # the few rows that share anything with another one; the plan below sees only those.
        suspects = copy_suspects(_rank_checked(candidates) if ranked else candidates, max_distance)
        candidates = (r for r in relevant(rows) if hash((r.label, r.photo_id)) in suspects)
    ordered = _in_rank_order(candidates, order) if ranked else sorted(candidates, key=order)

    decisions: dict[tuple[str, str], Decision] = {}
    with SeenIndex(max_distance) as seen:
        for row in ordered:
            phash = int(row.phash, 16) if row.phash else None
            if row.status != Status.OK:
                # An earlier drop: remembered (its photo id claims the photo), never revived.
                if poison and row.status == Status.CROSS_CLASS:
                    ambiguous = _Entry.of(row, dropped=True, ambiguous=True)
                    seen.add(ambiguous, sha256=row.sha256, phash=phash)
                else:
                    seen.add(_Entry.of(row, dropped=True))
                continue

            matches = _matches(row, phash, seen)
            if not matches:
                seen.add(_Entry.of(row, dropped=False), sha256=row.sha256, phash=phash)
                continue

            crossing = [m for m in matches if m.entry.label != row.label or m.entry.ambiguous]
            if not crossing:
                seen.add(_Entry.of(row, dropped=True))
                first = matches[0]
                status = Status.DUPLICATE if first.kind == "sha" else Status.NEAR_DUPLICATE
                decisions[(row.label, row.photo_id)] = Decision(
                    row.label, row.photo_id, status, _reason(first, other=first.entry)
                )
                continue

            first = crossing[0]
            reason = _reason(first, other=first.entry)
            if first.entry.label == row.label:
                reason += " (an image also found under another class)"
            decisions[(row.label, row.photo_id)] = Decision(
                row.label, row.photo_id, Status.CROSS_CLASS, reason
            )
            if not poison:
                seen.add(_Entry.of(row, dropped=True))
            else:
                # Every copy goes: the kept ones this row collided with, and this row stays in
                # the index so that later copies in any class are caught as well.
                entry = _Entry.of(row, dropped=True, ambiguous=True)
                seen.add(entry, sha256=row.sha256, phash=phash)
                for m in crossing:
                    other = m.entry
                    if not other.dropped:
                        key = (other.label, other.photo_id)
                        decisions[key] = Decision(*key, Status.CROSS_CLASS, _reason(m, other=entry))
                    other.dropped = other.ambiguous = True
                    seen.save(other)
    return sorted(decisions.values(), key=lambda d: (d.label, d.photo_id))


def copy_suspects(rows: Iterable[CandidateRow], max_distance: int) -> set[int]:
    """``hash((label, photo_id))`` of every row that shares its photo id, its stored bytes or a
    pHash within ``max_distance`` bits with another row: the only rows a plan can drop, or
    match a row against. A superset (colliding keys only add rows), never a subset.

    A row that shares nothing is kept by the plan and is never anyone's match, so planning over
    the suspects alone gives the same decisions. Most rows share nothing, and the plan's index
    costs about 80 us per row it holds; this pass costs a few, in 48 bytes per row of compact
    arrays (up to about 170 more while a key is sorted): each key is sorted once, and near
    hashes meet in a bucket of one of their ``max_distance + 1`` parts (the index's pigeonhole,
    see :class:`SeenIndex`). Equal hashes are found by sorting first, and the buckets hold
    only distinct ones: a thousand copies of one blank image's hash cost one sort, not a
    million comparisons per part.
    """
    keys, photos = array("q"), array("q")
    sha_at, shas = array("q"), array("q")
    hash_at, hashes = array("q"), array("Q")
    for i, row in enumerate(rows):
        keys.append(hash((row.label, row.photo_id)))
        photos.append(hash(row.photo_id))
        if row.sha256:
            sha_at.append(i)
            shas.append(hash(row.sha256))
        if row.phash and max_distance > 0:
            hash_at.append(i)
            hashes.append(int(row.phash, 16))
    suspects: set[int] = set()
    for run in _equal_runs(photos):
        suspects.update(keys[i] for i in run)
    for run in _equal_runs(shas):
        suspects.update(keys[sha_at[i]] for i in run)
    for run in _equal_runs(hashes):
        suspects.update(keys[hash_at[i]] for i in run)
    distinct = sorted(set(hashes))
    near: set[int] = set()  # distinct hash values within max_distance of another
    for shift, mask in _chunks(max_distance) if max_distance > 0 else ():
        for run in _equal_runs((h >> shift) & mask for h in distinct):
            for a, i in enumerate(run):
                for j in run[a + 1 :]:
                    if (distinct[i] ^ distinct[j]).bit_count() <= max_distance:
                        near.update((distinct[i], distinct[j]))
    if near:
        suspects.update(keys[hash_at[i]] for i, h in enumerate(hashes) if h in near)
    return suspects


def _equal_runs(values: Iterable[int]) -> Iterator[list[int]]:
    """The indices of each value that ``values`` holds more than once, a list per value.

    Sorted as one list of ``value << 32 | index`` ints: no key list beside it, about 48 bytes
    per value for the time of one sort."""
    packed = [((v & _MASK) << 32) | i for i, v in enumerate(values)]
    packed.sort()
    for _, run in itertools.groupby(packed, key=lambda p: p >> 32):
        indices = [p & 0xFFFF_FFFF for p in run]
        if len(indices) > 1:
            yield indices


def _matches(row: CandidateRow, phash: int | None, seen: SeenIndex) -> list[_Match]:
    """Earlier entries this row copies, by precedence (photo id, bytes, look), each once."""
    found: list[_Match] = []
    same_photo = seen.by_photo(row.photo_id)
    if same_photo is not None and same_photo.label != row.label:
        found.append(_Match(same_photo, "photo"))
    same_bytes = seen.by_sha(row.sha256) if row.sha256 else None
    if same_bytes is not None:
        found.append(_Match(same_bytes, "sha"))
    if phash is not None and seen.max_distance > 0:
        hit = seen.near(phash)
        if hit is not None:
            found.append(_Match(hit[0], "phash", hit[1]))
    unique: list[_Match] = []
    for m in found:
        if all(m.entry.n != u.entry.n for u in unique):
            unique.append(m)
    return unique


def apply_decisions(
    rows: Iterable[CandidateRow], decisions: Iterable[Decision]
) -> list[CandidateRow]:
    """``rows`` with the decisions' statuses and reasons applied (what the state will hold)."""
    by_key = {(d.label, d.photo_id): d for d in decisions}
    result = []
    for row in rows:
        d = by_key.get((row.label, row.photo_id))
        result.append(
            row if d is None else dataclasses.replace(row, status=d.status, reason=d.reason)
        )
    return result


def kept_rows(rows: Iterable[CandidateRow], decisions: Iterable[Decision]) -> list[CandidateRow]:
    """The ``ok`` rows that survive the decisions, in the order given."""
    return [r for r in apply_decisions(rows, decisions) if r.status == Status.OK]


# -- applying a plan: the state and the files -------------------------------------------------


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
