"""Deduplication planning: which downloaded images must leave the dataset, and why (pure, no I/O).

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
in any class are dropped too. Plans therefore only ever add drops, and a plan is a pure function
of the rows it is given.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from asyncds.state import DEDUP_STATUSES, CandidateRow, Status, image_relpath

K = TypeVar("K")

HASH_BITS = 64
CrossClassPolicy = Literal["drop", "keep-first"]


class PhashIndex(Generic[K]):
    """Near-duplicate lookup of 64-bit hashes by multi-index hashing.

    The hash is cut into ``max_distance + 1`` chunks. By pigeonhole, two hashes that differ in
    at most ``max_distance`` bits agree exactly on at least one chunk, so a query only compares
    against the hashes that share a chunk value with it (a few dict lookups) and confirms each
    candidate by the popcount of the XOR. Cost per query is proportional to the bucket sizes,
    not to the number of stored hashes.
    """

    def __init__(self, max_distance: int) -> None:
        if not 0 <= max_distance < HASH_BITS:
            raise ValueError(f"max_distance must be in [0, {HASH_BITS - 1}], got {max_distance}")
        self.max_distance = max_distance
        n_chunks = max_distance + 1
        base, extra = divmod(HASH_BITS, n_chunks)
        self._chunks: list[tuple[int, int]] = []  # (shift, mask)
        shift = 0
        for i in range(n_chunks):
            width = base + (1 if i < extra else 0)
            self._chunks.append((shift, (1 << width) - 1))
            shift += width
        # One table per chunk: chunk value -> insertion numbers, ascending. A bucket is one
        # list of numbers (each number object shared by every chunk's bucket), not its own
        # copy of the hashes: half the memory of a large index, for one list lookup per compare.
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._chunks]
        self._hashes: list[int] = []  # by insertion number
        self._keys: list[K] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, h: int, key: K) -> None:
        number = len(self._keys)
        self._keys.append(key)
        self._hashes.append(h)
        for (shift, mask), table in zip(self._chunks, self._tables, strict=True):
            value = (h >> shift) & mask
            bucket = table.get(value)
            if bucket is None:
                table[value] = [number]
            else:
                bucket.append(number)

    def find(self, h: int) -> K | None:
        """The key of the first-added hash within ``max_distance`` of ``h``, or None."""
        found = self.find_with_distance(h)
        return None if found is None else found[0]

    def find_with_distance(self, h: int) -> tuple[K, int] | None:
        """Like :meth:`find`, with the Hamming distance of the match."""
        best: int | None = None
        limit = self.max_distance
        hashes = self._hashes
        for (shift, mask), table in zip(self._chunks, self._tables, strict=True):
            bucket = table.get((h >> shift) & mask)
            if bucket is None:
                continue
            # The first hit in a bucket is its earliest (insertion order). A generator scan is
            # about twice as fast as an explicit loop here, which counts at 100k hashes.
            hit = next((n for n in bucket if (hashes[n] ^ h).bit_count() <= limit), None)
            if hit is not None and (best is None or hit < best):
                best = hit
        return None if best is None else (self._keys[best], (hashes[best] ^ h).bit_count())


@dataclass(frozen=True, slots=True)
class Decision:
    """One row to drop: its new status (a dedup status) and a reason naming the copy it matched."""

    label: str
    photo_id: str
    status: str
    reason: str


@dataclass(slots=True)
class _Entry:
    """A processed row as the indexes see it: what a reason names, and what became of it.

    Not the row itself, so planning a streamed state holds a few small objects per image.
    """

    label: str
    photo_id: str
    path: str  # stored path when it is not the usual one (see ``where``), else ""
    dropped: bool
    ambiguous: bool = False  # found under several classes with the `drop` policy: poisons copies

    @classmethod
    def of(cls, row: CandidateRow, *, dropped: bool) -> _Entry:
        usual = not row.path or row.path == image_relpath(row.label, row.photo_id)
        # Interned: rows read from the state each carry their own copy of the label.
        return cls(sys.intern(row.label), row.photo_id, "" if usual else row.path, dropped)

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


def _in_rank_order(
    rows: Iterable[CandidateRow], key: Callable[[CandidateRow], tuple[int, int, str, str]]
) -> Iterator[CandidateRow]:
    """Rows that come by ascending ``seq``, each run of one ``seq`` put in processing order."""
    run: list[CandidateRow] = []  # one rank: at most a row per class from a state
    for row in rows:
        if run and row.seq != run[0].seq:
            if row.seq < run[0].seq:
                raise ValueError(
                    f"rows are not in search rank order: {row.label}/{row.photo_id} "
                    f"(rank {row.seq}) after rank {run[0].seq}"
                )
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
    """
    if cross_class not in ("drop", "keep-first"):
        raise ValueError(f"cross_class must be 'drop' or 'keep-first', got {cross_class!r}")
    poison = cross_class == "drop"
    position = {label: i for i, label in enumerate(class_order)}

    def order(r: CandidateRow) -> tuple[int, int, str, str]:
        return (r.seq, position[r.label], r.label, r.photo_id)

    relevant = (
        r
        for r in rows
        if r.label in position and (r.status == Status.OK or r.status in DEDUP_STATUSES)
    )
    ordered = _in_rank_order(relevant, order) if ranked else sorted(relevant, key=order)

    by_photo: dict[str, _Entry] = {}  # every processed row: rule 1 holds even for drops
    by_sha: dict[str, _Entry] = {}  # kept or ambiguous rows only
    near: PhashIndex[_Entry] | None = PhashIndex(max_distance) if max_distance > 0 else None
    decisions: dict[tuple[str, str], Decision] = {}

    def index(entry: _Entry, row: CandidateRow) -> None:
        if row.sha256:
            by_sha.setdefault(row.sha256, entry)
        if near is not None and row.phash:
            near.add(int(row.phash, 16), entry)

    for row in ordered:
        entry = _Entry.of(row, dropped=row.status != Status.OK)
        if entry.dropped:
            # An earlier drop: remembered, never revived.
            by_photo.setdefault(row.photo_id, entry)
            if poison and row.status == Status.CROSS_CLASS:
                entry.ambiguous = True
                index(entry, row)
            continue

        matches = _matches(row, by_photo, by_sha, near)
        by_photo.setdefault(row.photo_id, entry)
        if not matches:
            index(entry, row)
            continue

        crossing = [m for m in matches if m.entry.label != row.label or m.entry.ambiguous]
        entry.dropped = True
        if not crossing:
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
        if poison:
            # Every copy goes: the kept ones this row collided with, and this row stays in the
            # indexes so that later copies in any class are caught as well.
            entry.ambiguous = True
            index(entry, row)
            for m in crossing:
                other = m.entry
                other.ambiguous = True
                if not other.dropped:
                    other.dropped = True
                    key = (other.label, other.photo_id)
                    decisions[key] = Decision(*key, Status.CROSS_CLASS, _reason(m, other=entry))
    return sorted(decisions.values(), key=lambda d: (d.label, d.photo_id))


def _matches(
    row: CandidateRow,
    by_photo: dict[str, _Entry],
    by_sha: dict[str, _Entry],
    near: PhashIndex[_Entry] | None,
) -> list[_Match]:
    """Earlier entries this row copies, by precedence (photo id, bytes, look), each once."""
    found: list[_Match] = []
    same_photo = by_photo.get(row.photo_id)
    if same_photo is not None and same_photo.label != row.label:
        found.append(_Match(same_photo, "photo"))
    same_bytes = by_sha.get(row.sha256) if row.sha256 else None
    if same_bytes is not None:
        found.append(_Match(same_bytes, "sha"))
    if near is not None and row.phash:
        hit = near.find_with_distance(int(row.phash, 16))
        if hit is not None:
            found.append(_Match(hit[0], "phash", hit[1]))
    unique: list[_Match] = []
    for m in found:
        if all(m.entry is not u.entry for u in unique):
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
