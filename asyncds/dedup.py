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
from collections.abc import Iterable, Sequence
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
        # One table per chunk: chunk value -> (hashes, insertion numbers), both in insertion
        # order; the hashes sit in the bucket itself so a scan touches nothing else.
        self._tables: list[dict[int, tuple[list[int], list[int]]]] = [{} for _ in self._chunks]
        self._keys: list[K] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, h: int, key: K) -> None:
        number = len(self._keys)
        self._keys.append(key)
        for (shift, mask), table in zip(self._chunks, self._tables, strict=True):
            value = (h >> shift) & mask
            bucket = table.get(value)
            if bucket is None:
                table[value] = ([h], [number])
            else:
                bucket[0].append(h)
                bucket[1].append(number)

    def find(self, h: int) -> K | None:
        """The key of the first-added hash within ``max_distance`` of ``h``, or None."""
        found = self.find_with_distance(h)
        return None if found is None else found[0]

    def find_with_distance(self, h: int) -> tuple[K, int] | None:
        """Like :meth:`find`, with the Hamming distance of the match."""
        best: int | None = None
        best_distance = 0
        limit = self.max_distance
        for (shift, mask), table in zip(self._chunks, self._tables, strict=True):
            bucket = table.get((h >> shift) & mask)
            if bucket is None:
                continue
            hashes, numbers = bucket
            # The first hit in a bucket is its earliest (insertion order). A generator scan is
            # about twice as fast as an explicit loop here, which counts at 100k hashes.
            hit = next(
                (i for i, other in enumerate(hashes) if (other ^ h).bit_count() <= limit), None
            )
            if hit is not None and (best is None or numbers[hit] < best):
                best, best_distance = numbers[hit], (hashes[hit] ^ h).bit_count()
        return None if best is None else (self._keys[best], best_distance)


@dataclass(frozen=True, slots=True)
class Decision:
    """One row to drop: its new status (a dedup status) and a reason naming the copy it matched."""

    label: str
    photo_id: str
    status: str
    reason: str


@dataclass(slots=True)
class _Entry:
    """A processed row as the indexes see it."""

    row: CandidateRow
    dropped: bool
    ambiguous: bool = False  # found under several classes with the `drop` policy: poisons copies


@dataclass(frozen=True, slots=True)
class _Match:
    entry: _Entry
    kind: Literal["photo", "sha", "phash"]
    distance: int = 0


def _where(row: CandidateRow) -> str:
    return row.path or image_relpath(row.label, row.photo_id)


def _reason(match: _Match, *, other: CandidateRow) -> str:
    """Why a row matched ``other`` (the entry it collided with)."""
    if match.kind == "photo":
        return f"photo also found under {other.label}"
    if match.kind == "sha":
        return f"same image as {_where(other)}"
    return f"near-duplicate (distance {match.distance}) of {_where(other)}"


def plan_dedup(
    rows: Iterable[CandidateRow],
    *,
    class_order: Sequence[str],
    max_distance: int,
    cross_class: CrossClassPolicy | str,
) -> list[Decision]:
    """The rows that must be dropped now, sorted by (label, photo id).

    Only ``ok`` rows can be dropped; rows with a dedup status are earlier drops (see the module
    docstring); rows of other statuses and of classes not in ``class_order`` are ignored.
    """
    if cross_class not in ("drop", "keep-first"):
        raise ValueError(f"cross_class must be 'drop' or 'keep-first', got {cross_class!r}")
    poison = cross_class == "drop"
    position = {label: i for i, label in enumerate(class_order)}
    relevant = [
        r
        for r in rows
        if r.label in position and (r.status == Status.OK or r.status in DEDUP_STATUSES)
    ]
    relevant.sort(key=lambda r: (r.seq, position[r.label], r.label, r.photo_id))

    by_photo: dict[str, _Entry] = {}  # every processed row: rule 1 holds even for drops
    by_sha: dict[str, _Entry] = {}  # kept or ambiguous rows only
    near: PhashIndex[_Entry] | None = PhashIndex(max_distance) if max_distance > 0 else None
    decisions: dict[tuple[str, str], Decision] = {}

    def index(entry: _Entry) -> None:
        row = entry.row
        if row.sha256:
            by_sha.setdefault(row.sha256, entry)
        if near is not None and row.phash:
            near.add(int(row.phash, 16), entry)

    for row in relevant:
        entry = _Entry(row, dropped=row.status != Status.OK)
        if entry.dropped:
            # An earlier drop: remembered, never revived.
            by_photo.setdefault(row.photo_id, entry)
            if poison and row.status == Status.CROSS_CLASS:
                entry.ambiguous = True
                index(entry)
            continue

        matches = _matches(row, by_photo, by_sha, near)
        by_photo.setdefault(row.photo_id, entry)
        if not matches:
            index(entry)
            continue

        crossing = [m for m in matches if m.entry.row.label != row.label or m.entry.ambiguous]
        entry.dropped = True
        if not crossing:
            first = matches[0]
            status = Status.DUPLICATE if first.kind == "sha" else Status.NEAR_DUPLICATE
            decisions[(row.label, row.photo_id)] = Decision(
                row.label, row.photo_id, status, _reason(first, other=first.entry.row)
            )
            continue

        first = crossing[0]
        reason = _reason(first, other=first.entry.row)
        if first.entry.row.label == row.label:
            reason += " (an image also found under another class)"
        decisions[(row.label, row.photo_id)] = Decision(
            row.label, row.photo_id, Status.CROSS_CLASS, reason
        )
        if poison:
            # Every copy goes: the kept ones this row collided with, and this row stays in the
            # indexes so that later copies in any class are caught as well.
            entry.ambiguous = True
            index(entry)
            for m in crossing:
                other = m.entry
                other.ambiguous = True
                if not other.dropped:
                    other.dropped = True
                    key = (other.row.label, other.row.photo_id)
                    decisions[key] = Decision(*key, Status.CROSS_CLASS, _reason(m, other=row))
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
    if same_photo is not None and same_photo.row.label != row.label:
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
