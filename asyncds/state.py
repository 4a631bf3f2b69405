"""Run state: one SQLite file in the output folder, the single source of truth.

Every candidate photo is a row (class, photo id, search order, URL, attribution, status and
reason, hashes, stored path); every class's search progress is a row (the resume cursor).
All artifacts are derived from it, so a run killed at any moment resumes with the same command.

SQLite is synchronous, so every statement runs on one dedicated thread; results are buffered and
committed in batches (one transaction each) to keep the event loop free and the disk quiet.
Images are written atomically: a temporary name in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:  # pool workers import this module for atomic writes: keep aiohttp out
    from asyncds.flickr import Candidate

log = logging.getLogger(__name__)

STATE_FILE = "asyncds-state.sqlite"
STREAM_CACHE_KIB = 512  # page cache of a RowStream's connection
_IN_CHUNK = 500  # ids per "IN (...)" query: well under SQLite's limit on parameters

T = TypeVar("T")


class Status(StrEnum):
    """What became of a candidate. Everything but ``pending`` and ``ok`` is a drop reason."""

    PENDING = "pending"
    OK = "ok"
    # download outcomes (fetch.FetchStatus)
    UNAVAILABLE = "unavailable"
    HTTP_ERROR = "http_error"
    NOT_IMAGE = "not_image"
    TOO_LARGE = "too_large"
    NETWORK_ERROR = "network_error"
    HOST_NOT_ALLOWED = "host_not_allowed"
    # imaging outcomes (imaging.ImageResult.status)
    CORRUPT = "corrupt"
    TOO_SMALL = "too_small"
    TOO_MANY_PIXELS = "too_many_pixels"
    NO_URL = "no_url"
    # dedup outcomes (assemble)
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    CROSS_CLASS = "cross_class"
    # the user's fixes (asyncds.exclude): never downloaded again, in any class
    EXCLUDED = "excluded"  # its photo id is in the exclude list
    REMOVED_BY_USER = "removed_by_user"  # a good image whose file was deleted by hand


DEDUP_STATUSES = frozenset({Status.DUPLICATE, Status.NEAR_DUPLICATE, Status.CROSS_CLASS})


@dataclass(frozen=True, slots=True)
class CandidateRow:
    """A candidate as stored: the search's record plus what the pipeline made of it."""

    label: str
    photo_id: str
    seq: int
    url: str
    width: int
    height: int
    owner: str
    ownername: str
    title: str
    license: int
    date_upload: int
    status: str = Status.PENDING
    reason: str = ""
    attempts: int = 0
    sha256: str = ""
    phash: str = ""  # 16 hex digits: SQLite integers are signed, a 64-bit hash is not
    path: str = ""  # relative to the output folder, POSIX form
    stored_width: int = 0
    stored_height: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The pipeline's verdict on one candidate, buffered until the next batch commit."""

    label: str
    photo_id: str
    status: str
    reason: str = ""
    attempts: int = 0
    sha256: str = ""
    phash: str = ""
    path: str = ""
    stored_width: int = 0
    stored_height: int = 0


@dataclass(frozen=True, slots=True)
class SearchState:
    cursor: str | None
    exhausted: bool
    total: int


_ROW_COLUMNS = tuple(f.name for f in fields(CandidateRow))

RowOrder = Literal["class", "rank", "path"]
# "class": by class, then search rank (what ``rows()`` returns). "rank": by search rank across
# classes (dedup's order). "path": by the image's relative path (``image_relpath`` when none
# is stored); SQLite's BINARY collation compares UTF-8 bytes, which orders like Python
# compares str, so this is the order ``sorted()`` gives the same paths.
_ORDER_BY: dict[str, str] = {
    "class": "label, seq",
    "rank": "seq, label, photo_id",
    "path": "CASE WHEN path != '' THEN path ELSE label || '/' || photo_id || '.jpg' END,"
    " label, seq",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    label TEXT NOT NULL,
    photo_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    url TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    owner TEXT NOT NULL,
    ownername TEXT NOT NULL,
    title TEXT NOT NULL,
    license INTEGER NOT NULL,
    date_upload INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    phash TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    stored_width INTEGER NOT NULL DEFAULT 0,
    stored_height INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (label, photo_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS candidates_order ON candidates (label, seq);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates (label, status);
CREATE INDEX IF NOT EXISTS candidates_photo ON candidates (photo_id);
CREATE TABLE IF NOT EXISTS searches (
    label TEXT PRIMARY KEY,
    cursor TEXT,
    exhausted INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StateError(Exception):
    """The state file cannot be used; the message names it and the way out."""


def damaged_state_message(path: Path, exc: BaseException) -> str:
    return (
        f"the state file {path} is not a usable asyncds state ({exc}); move it aside to "
        "keep it, or run with --fresh to start this dataset over"
    )


class StateStore:
    """Async facade over the SQLite state; every call runs on the store's own thread."""

    def __init__(self, path: Path, *, batch_size: int = 200) -> None:
        self.path = path
        self._batch_size = batch_size
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asyncds-state")
        self._conn: sqlite3.Connection | None = None
        self._buffer: list[Outcome] = []

    @classmethod
    async def open(cls, path: Path, *, batch_size: int = 200) -> StateStore:
        store = cls(path, batch_size=batch_size)
        try:
            await store._run(store._open_sync)
        except sqlite3.DatabaseError as exc:
            store._thread.shutdown(wait=False)
            raise StateError(damaged_state_message(path, exc)) from None
        except BaseException:
            store._thread.shutdown(wait=False)
            raise
        return store

    async def close(self) -> None:
        try:
            await self.flush()
            await self._run(self._close_sync)
        finally:
            self._thread.shutdown(wait=True)

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing -------------------------------------------------------------------------

    async def add_page(
        self,
        label: str,
        candidates: Sequence[Candidate],
        *,
        cursor: str,
        exhausted: bool,
        total: int,
        blocked: Mapping[str, str] | None = None,
    ) -> list[CandidateRow]:
        """Store a search page's new candidates and the class's cursor in one transaction.

        Returns the rows actually inserted (ids already known for this class are skipped),
        numbered in search order after the class's existing rows. A candidate whose photo id
        is in ``blocked`` (id -> reason: excluded or removed by the user) is stored as
        ``excluded`` with that reason, never ``pending``: nothing downloads it.
        """
        return await self._run(
            self._add_page_sync, label, list(candidates), cursor, exhausted, total, blocked or {}
        )

    def record(self, outcome: Outcome) -> bool:
        """Buffer an outcome; True when the buffer is due for a flush."""
        self._buffer.append(outcome)
        return len(self._buffer) >= self._batch_size

    async def flush(self) -> None:
        """Commit buffered outcomes in one transaction."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        await self._run(self._write_outcomes_sync, batch)

    async def set_statuses(self, updates: Iterable[tuple[str, str, str, str]]) -> None:
        """Set (label, photo_id, status, reason) for many rows at once (dedup decisions)."""
        await self._run(self._set_statuses_sync, list(updates))

    async def set_phashes(self, updates: Iterable[tuple[str, str, str]]) -> None:
        """Set (label, photo_id, phash) for many rows at once (hashes re-derived from files)."""
        await self._run(
            self._executemany_commit,
            "UPDATE candidates SET phash = ? WHERE label = ? AND photo_id = ?",
            [(phash, label, pid) for label, pid, phash in updates],
        )

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            self._execute_commit, "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)
        )

    # -- reading -------------------------------------------------------------------------

    async def search_state(self, label: str) -> SearchState:
        row = await self._run(
            self._fetchone,
            "SELECT cursor, exhausted, total FROM searches WHERE label = ?",
            (label,),
        )
        if row is None:
            return SearchState(cursor=None, exhausted=False, total=0)
        return SearchState(cursor=row[0], exhausted=bool(row[1]), total=int(row[2]))

    async def rows(self, label: str | None = None, status: str | None = None) -> list[CandidateRow]:
        """Rows in search order, optionally of one class and/or one status."""
        where, params = [], []
        if label is not None:
            where.append("label = ?")
            params.append(label)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {', '.join(_ROW_COLUMNS)} FROM candidates"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY label, seq"
        found = await self._run(self._fetchall, sql, tuple(params))
        return [CandidateRow(*r) for r in found]

    def stream(
        self,
        *,
        label: str | None = None,
        statuses: Collection[str] | None = None,
        order: RowOrder = "class",
        chunk_size: int = 256,
    ) -> RowStream:
        """Rows read straight from the file, a chunk at a time, from any thread (see RowStream).

        It sees what is committed: :meth:`flush` first if outcomes may be buffered.
        """
        return RowStream(
            self.path,
            label=label,
            statuses=None if statuses is None else frozenset(statuses),
            order=order,
            chunk_size=chunk_size,
        )

    async def counts(self) -> dict[str, Counter[str]]:
        """Per class, how many candidates are in each status."""
        found = await self._run(
            self._fetchall,
            "SELECT label, status, COUNT(*) FROM candidates GROUP BY label, status",
            (),
        )
        result: dict[str, Counter[str]] = {}
        for label, status, n in found:
            result.setdefault(label, Counter())[status] = n
        return result

    async def rows_of_photos(self, photo_ids: Collection[str]) -> list[CandidateRow]:
        """Every row, in any class and status, of these photo ids (by class and rank)."""
        ids = sorted(set(photo_ids))
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            found += await self._run(
                self._fetchall,
                f"SELECT {', '.join(_ROW_COLUMNS)} FROM candidates"
                f" WHERE photo_id IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
        return sorted((CandidateRow(*r) for r in found), key=lambda r: (r.label, r.seq))

    async def meta(self, key: str) -> str | None:
        row = await self._run(self._fetchone, "SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    # -- the thread side -----------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a killed process (only power loss can drop the last commits).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _fetchone(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        assert self._conn is not None
        return self._conn.execute(sql, params).fetchone()

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        return self._conn.execute(sql, params).fetchall()

    def _execute_commit(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._transaction() as conn:
            conn.execute(sql, params)

    def _executemany_commit(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        with self._transaction() as conn:
            conn.executemany(sql, params)

    def _add_page_sync(
        self,
        label: str,
        candidates: list[Candidate],
        cursor: str,
        exhausted: bool,
        total: int,
        blocked: Mapping[str, str],
    ) -> list[CandidateRow]:
        inserted: list[CandidateRow] = []
        with self._transaction() as conn:
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM candidates WHERE label = ?", (label,)
            ).fetchone()
            for c in candidates:
                row = CandidateRow(
                    label=label,
                    photo_id=c.photo_id,
                    seq=last + 1,
                    url=c.url,
                    width=c.width,
                    height=c.height,
                    owner=c.owner,
                    ownername=c.ownername,
                    title=c.title,
                    license=c.license,
                    date_upload=c.date_upload,
                )
                if c.photo_id in blocked:
                    row = dataclasses.replace(
                        row, status=Status.EXCLUDED, reason=blocked[c.photo_id]
                    )
                cur = conn.execute(
                    "INSERT OR IGNORE INTO candidates (label, photo_id, seq, url, width, height,"
                    " owner, ownername, title, license, date_upload, status, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.label,
                        row.photo_id,
                        row.seq,
                        row.url,
                        row.width,
                        row.height,
                        row.owner,
                        row.ownername,
                        row.title,
                        row.license,
                        row.date_upload,
                        row.status,
                        row.reason,
                    ),
                )
                if cur.rowcount:
                    inserted.append(row)
                    last += 1
            conn.execute(
                "INSERT OR REPLACE INTO searches (label, cursor, exhausted, total)"
                " VALUES (?, ?, ?, ?)",
                (label, cursor, int(exhausted), total),
            )
        return inserted

    def _write_outcomes_sync(self, batch: list[Outcome]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE candidates SET status = ?, reason = ?, attempts = ?, sha256 = ?,"
                " phash = ?, path = ?, stored_width = ?, stored_height = ?"
                " WHERE label = ? AND photo_id = ?",
                [
                    (
                        o.status,
                        o.reason,
                        o.attempts,
                        o.sha256,
                        o.phash,
                        o.path,
                        o.stored_width,
                        o.stored_height,
                        o.label,
                        o.photo_id,
                    )
                    for o in batch
                ],
            )

    def _set_statuses_sync(self, updates: list[tuple[str, str, str, str]]) -> None:
        self._executemany_commit(
            "UPDATE candidates SET status = ?, reason = ? WHERE label = ? AND photo_id = ?",
            [(status, reason, label, pid) for label, pid, status, reason in updates],
        )


@dataclass(frozen=True, slots=True)
class RowStream:
    """A re-iterable read of candidates that holds at most ``chunk_size`` rows at a time.

    Each iteration opens a read-only connection of its own (the store's connection belongs to
    the store's thread; WAL lets readers run beside the writer), so it can be iterated on any
    thread, and runs one query: one consistent snapshot per iteration, not across iterations.
    """

    path: Path
    label: str | None = None
    statuses: frozenset[str] | None = None  # None: every status
    order: RowOrder = "class"
    chunk_size: int = 256

    def __iter__(self) -> Iterator[CandidateRow]:
        where, params = [], []
        if self.label is not None:
            where.append("label = ?")
            params.append(self.label)
        if self.statuses is not None:
            wanted = sorted(self.statuses)
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            params += wanted
        sql = f"SELECT {', '.join(_ROW_COLUMNS)} FROM candidates"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_ORDER_BY[self.order]}"
        # check_same_thread off: the connection is private to this generator, which may be
        # finalised on another thread than the one that iterated it.
        conn = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        try:
            # One pass in index or sorted order needs few cached pages; the default 2 MB
            # would only add to every stream's memory (a sort spills to a temp file anyway).
            conn.execute(f"PRAGMA cache_size = -{STREAM_CACHE_KIB}")
            cursor = conn.execute(sql, params)
            while chunk := cursor.fetchmany(self.chunk_size):
                for values in chunk:
                    yield CandidateRow(*values)
        finally:
            conn.close()


def scratch_database(schema: str, *, cache_kib: int = 1024) -> sqlite3.Connection:
    """A private SQLite database on disk for one computation's working set (blocking).

    Dedup's index and assembly's list of the dataset's images live in one of these instead of
    Python containers, so their memory is the page cache (``cache_kib``) whatever the count.
    SQLite makes an anonymous temporary file (unlinked at once: nothing is left behind, even
    by a killed run) and deletes it on close. ``schema`` is created, then one transaction is
    opened that is never committed: no journal and no syncs for data nobody keeps.
    """
    conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA temp_store = FILE")  # sorts spill to disk, not to memory
    conn.executescript(schema)
    conn.execute("BEGIN")
    return conn
