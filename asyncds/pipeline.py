"""The download pipeline: search producers → one bounded queue → download consumers.

- One producer per class walks its Flickr search (``flickr.ClassSearch``), stores each page's
  new candidates with the search cursor (``state.StateStore.add_page``), and enqueues them one
  at a time, only while ``good + in flight < count``: a failed, dropped or duplicate candidate
  frees its place and the next candidate takes it. So a class ends with exactly ``count`` good
  images when Flickr has them, and short (the summary says so) when its search runs dry.
- The queue is bounded: producers wait when consumers are behind, so memory stays flat.
- ``download.concurrency`` consumers share one ``aiohttp.ClientSession``; decoding, resizing,
  hashing and writing the file run in a process pool (``worker.run_batch``).
- Pool jobs go in batches (:class:`asyncds.pool.ImagePool`): images that wait while every
  worker is busy leave together, so a busy run sends a few dozen per message and an idle one
  sends each image at once, never waiting for a batch to fill.
- A candidate whose photo id the user excluded or deleted by hand (``asyncds.exclude``) is
  stored as ``excluded`` when its page is, and never downloaded, whichever class found it.
- The hot path does per image only what it must: a candidate found by this run's search is
  downloaded without first asking the disk whether its file exists; only candidates left
  pending by an earlier run are first offered to the pool to adopt a file already written.

A download that cannot connect to its host is handed to :mod:`asyncds.outage`, which tells an
outage (the run stops, resumable, nothing recorded) from a bad image (dropped, replaced).

Candidates are enqueued in search order and every enqueued one is finished before a class is
done, so the good images of a class are always "the first ``count`` good ones in search order":
the same set whether the run went straight through or was killed and resumed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from asyncds.config import ClassSpec, Config
from asyncds.fetch import FetchResult, ImageHosts, fetch_image
from asyncds.files import image_relpath
from asyncds.flickr import ClassSearch, FlickrClient, SearchCursor
from asyncds.imaging import ImageOptions, ImageResult, phash_to_hex
from asyncds.outage import HostUnreachable, HostWatch
from asyncds.pool import ImagePool
from asyncds.state import CandidateRow, Outcome, StateStore, Status
from asyncds.worker import ImageJob

log = logging.getLogger(__name__)


@dataclass
class ClassProgress:
    """Live counters of one class; the producer's gate and the progress display read them."""

    label: str
    target: int
    good: int = 0
    failed: int = 0
    in_flight: int = 0
    candidates: int = 0
    exhausted: bool = False
    done: bool = False
    started: float = field(default_factory=time.monotonic)
    good_this_run: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)

    @property
    def short(self) -> bool:
        return self.exhausted and self.good < self.target

    async def reserve(self) -> bool:
        """Wait for a free place for one more candidate; False once the class is complete."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.good >= self.target or self.good + self.in_flight < self.target
            )
            if self.good >= self.target:
                return False
            self.in_flight += 1
            return True

    async def settle(self, good: bool) -> None:
        async with self._changed:
            self.in_flight -= 1
            if good:
                self.good += 1
                self.good_this_run += 1
            else:
                self.failed += 1
            self._changed.notify_all()


@dataclass(frozen=True, slots=True)
class _Job:
    row: CandidateRow
    progress: ClassProgress
    resumed: bool  # pending from an earlier run: its file may exist already


class Pipeline:
    """One pass of search and download over every class that is not yet complete."""

    def __init__(
        self,
        config: Config,
        *,
        out_dir: Path,
        state: StateStore,
        client: FlickrClient,
        session: aiohttp.ClientSession,
        pool: ImagePool,
        progress: dict[str, ClassProgress],
        blocked: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        # Photo ids never to download, in any class (asyncds.exclude): id -> why.
        self.blocked: Mapping[str, str] = blocked or {}
        self.out_dir = out_dir
        self.state = state
        self.client = client
        self.session = session
        self.pool = pool
        self.progress = progress
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=config.download.queue_size)
        self._options = ImageOptions(
            max_side=config.image.max_side,
            quality=config.image.quality,
            min_side=config.image.min_side,
            max_pixels=config.image.max_pixels,
        )
        self._out = os.fspath(out_dir)
        self._max_bytes = config.download.max_bytes
        self._timeout_s = config.download.timeout_s
        self._idle_timeout_s = config.download.idle_timeout_s
        self._hosts = ImageHosts.for_api(config.flickr.api_url)
        self._retry = config.flickr.retry_policy
        self._flushing: asyncio.Task[None] | None = None
        self.watch = HostWatch(config.download.outage_s)
        self._loopback_origin = _loopback_origin(config.flickr.api_url)

    async def run(self) -> None:
        """Run producers and consumers until every class is complete or exhausted."""
        for spec in self.config.classes:
            await asyncio.to_thread((self.out_dir / spec.name).mkdir, parents=True, exist_ok=True)
        try:
            # Consumers and producers in one group: a consumer that fails (a dead imaging
            # worker, a full disk) ends the run at once with its error instead of leaving the
            # producers waiting on a queue nobody empties.
            async with asyncio.TaskGroup() as group:
                consumers = [
                    group.create_task(self._consume(), name=f"consumer-{i}")
                    for i in range(self.config.download.concurrency)
                ]
                producers = [
                    group.create_task(self._produce(spec), name=f"producer-{spec.name}")
                    for spec in self.config.classes
                ]
                await asyncio.gather(*producers)
                await self._queue.join()
                for task in consumers:
                    task.cancel()
        finally:
            if self._flushing is not None:
                await asyncio.gather(self._flushing, return_exceptions=True)
            await self.state.flush()

    # -- producers -----------------------------------------------------------------------

    async def _produce(self, spec: ClassSpec) -> None:
        progress = self.progress[spec.name]
        if progress.good >= progress.target:
            return
        # Candidates stored by an earlier run but never finished come first, in search order.
        for row in await self.state.rows(spec.name, Status.PENDING):
            if not await self._enqueue(row, progress, resumed=True):
                return
        search_state = await self.state.search_state(spec.name)
        if search_state.exhausted:
            progress.exhausted = True
            return
        search = ClassSearch(
            self.client,
            spec,
            self.config.flickr,
            max_side=self.config.image.max_side,
            cursor=SearchCursor.from_json(search_state.cursor) if search_state.cursor else None,
            dedupe=False,  # add_page skips ids the class holds (its primary key): no id set here
        )
        async for page in search.pages():
            rows = await self.state.add_page(
                spec.name,
                page.candidates,
                cursor=page.cursor.to_json(),
                exhausted=page.cursor.exhausted,
                total=page.total,
                blocked=self.blocked,
            )
            progress.candidates += len(rows)
            for row in rows:
                if row.status != Status.PENDING:  # an excluded photo: stored, never fetched
                    progress.failed += 1
                    continue
                if not await self._enqueue(row, progress, resumed=False):
                    return
        progress.exhausted = True
        log.info("%s: the search has no more candidates", spec.name)

    async def _enqueue(self, row: CandidateRow, progress: ClassProgress, *, resumed: bool) -> bool:
        if not await progress.reserve():
            return False
        await self._queue.put(_Job(row, progress, resumed))
        return True

    # -- consumers -----------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                outcome = await self._process(job)
                if self.state.record(outcome):
                    self._flush_soon()
                await job.progress.settle(outcome.status == Status.OK)
            finally:
                self._queue.task_done()

    def _flush_soon(self) -> None:
        # One batch commit at a time, in the background: consumers never wait on the disk.
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.state.flush())

    async def _process(self, job: _Job) -> Outcome:
        row = job.row
        relpath = image_relpath(row.label, row.photo_id)
        target = os.path.join(self._out, relpath)
        if job.resumed:
            # Perhaps finished by a run killed before its outcome was committed: adopt it.
            adopted = await self.pool.run("image", ImageJob(target), self._options)
            if adopted.status == Status.OK:
                return _ok(row, relpath, adopted, attempts=0)
        url = row.url
        if self._loopback_origin is not None and not url.startswith(self._loopback_origin):
            url = _rebase_loopback(url, self._loopback_origin)
        fetched = await self._fetch(url)
        if fetched.status != "ok" or fetched.data is None:
            return Outcome(
                row.label, row.photo_id, fetched.status, fetched.reason, fetched.attempts
            )
        # The worker verifies, hashes and stores the bytes. (Writing them to a file here for the
        # worker to rename cost this process 0.5 ms per image in file creation, more than the
        # socket: benchmarks/README.md.) A dead pool or a failed write raises here.
        result = await self.pool.run("image", ImageJob(target, fetched.data), self._options)
        if result.status != Status.OK:
            return Outcome(row.label, row.photo_id, result.status, result.reason, fetched.attempts)
        return _ok(row, relpath, result, attempts=fetched.attempts)

    async def _fetch(self, url: str) -> FetchResult:
        """:func:`fetch_image`, except that a failure to connect is never final during an
        outage of the host (:mod:`asyncds.outage`): it raises :class:`HostUnreachable`."""
        host_was_up = 0
        while True:
            began = time.monotonic()
            fetched = await fetch_image(
                self.session,
                url,
                max_bytes=self._max_bytes,
                timeout_s=self._timeout_s,
                retry=self._retry,
                hosts=self._hosts,
                idle_timeout_s=self._idle_timeout_s,
                watch=self.watch,
            )
            host = fetched.unreachable_host
            if not host:
                return fetched
            if self.watch.reached_since(host, began):
                # Others reached the host meanwhile. Once more from the start, in case it has
                # only just come back; a second such failure is this image's own.
                host_was_up += 1
                if host_was_up >= 2:
                    return fetched
                continue
            silent = self.watch.silent_for(host)
            if silent >= self.watch.outage_s:
                raise HostUnreachable(host, silent, fetched.reason.split(";")[0])
            await asyncio.sleep(min(_PROBE_S, self.watch.outage_s - silent))


# While a host may be down, each waiting download tries again this often (it is the probe).
_PROBE_S = 2.0
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _loopback_origin(api_url: str) -> str | None:
    """``scheme://host:port/`` of an API on loopback (an emulator), else None.

    An emulator's port changes from run to run (``--emulator`` takes any free one), so the
    image URLs an earlier run stored point at a port nobody listens on any more. Such URLs
    are fetched from the current API's origin instead: real Flickr never serves loopback
    URLs, and URLs that differ only in the emulator's port are the same image.
    """
    try:
        api = URL(api_url)
    except (ValueError, TypeError):
        return None
    if api.host not in _LOOPBACK_HOSTS or api.port is None:
        return None
    return f"{api.scheme}://{api.raw_authority}/"


def _rebase_loopback(url: str, origin: str) -> str:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return url
    if parsed.host not in _LOOPBACK_HOSTS:
        return url
    query = f"?{parsed.raw_query_string}" if parsed.raw_query_string else ""
    return origin + parsed.raw_path.lstrip("/") + query


def _ok(row: CandidateRow, relpath: str, result: ImageResult, *, attempts: int) -> Outcome:
    return Outcome(
        row.label,
        row.photo_id,
        Status.OK,
        "passed through" if result.passthrough else "",
        attempts,
        sha256=result.sha256,
        phash=phash_to_hex(result.phash),
        path=relpath,
        stored_width=result.width,
        stored_height=result.height,
    )


async def initial_progress(config: Config, state: StateStore) -> dict[str, ClassProgress]:
    """Counters for each class from what the state already holds (resume)."""
    counts = await state.counts()
    progress: dict[str, ClassProgress] = {}
    for spec in config.classes:
        by_status = counts.get(spec.name, {})
        search = await state.search_state(spec.name)
        progress[spec.name] = ClassProgress(
            label=spec.name,
            target=spec.count,
            good=by_status.get(Status.OK, 0),
            failed=sum(n for s, n in by_status.items() if s not in (Status.OK, Status.PENDING)),
            candidates=sum(by_status.values()),
            exhausted=search.exhausted and not by_status.get(Status.PENDING, 0),
        )
    return progress
