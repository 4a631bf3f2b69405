"""The imaging pool: worker processes fed in batches by the event loop itself.

Each worker is a child process (``python -m asyncds.worker``) joined to the main process by a
socket pair. The event loop writes a batch to a worker and reads its results with non-blocking
socket I/O; nothing else runs in the main process for it. Each worker has one batch in flight;
jobs that arrive meanwhile wait in one queue and leave together as the next batch of the first
worker to be free, so batches grow with the load and a lone job leaves at once.

Why not ``concurrent.futures.ProcessPoolExecutor``: it passes every task through two threads of
the main process (a queue feeder and a result manager). Their GIL hand-offs cost the event
loop's thread about 0.13 ms per task and, batched, still 17 % of the main process's samples in
a py-spy profile of a 20,000-image run (benchmarks/README.md); it also starts a resource
tracker process (13 MB) for semaphores this pool does not need.

Failure: a worker that dies (the out-of-memory killer, a crash) fails the jobs it held and every
later one with :class:`WorkerDied`; an ``OSError`` from a worker's write (a full disk) is raised
in the jobs of that batch. A worker ends with the run: it exits when its socket closes, and
``PR_SET_PDEATHSIG`` takes it down if the run is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

import asyncds

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")  # every message: its length, then a pickle
_STOP_TIMEOUT_S = 5.0
# A message carries at most this many bytes of images (or one image): 32 large downloads would
# be 5 MB in flight, held twice more by the worker while it reads and unpickles them.
_MAX_BATCH_BYTES = 1 << 20
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(asyncds.__file__)))


class WorkerDied(RuntimeError):
    """A pool worker ended while it held work: the run cannot go on."""


class _Worker:
    """One child process and the stream to it."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer

    async def request(self, kind: str, items: list[Any], options: Any) -> list[Any]:
        payload = pickle.dumps((kind, items, options), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.writer.write(_HEADER.pack(len(payload)))
            self.writer.write(payload)
            await self.writer.drain()
            (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
            status, value = pickle.loads(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerDied(await self._death()) from exc
        if status == "error":
            raise value
        return list(value)

    async def _death(self) -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 1.0)
        code = self.process.returncode
        how = (
            "still running"
            if code is None
            else f"killed by signal {-code}"
            if code < 0
            else f"exit code {code}"
        )
        return (
            f"an imaging worker process (pid {self.process.pid}) died ({how}); "
            "if the system ran out of memory, free some or lower download.concurrency"
        )


class ImagePool:
    """``workers`` imaging processes; :meth:`run` one job, :meth:`close` at the end.

    Use ``async with ImagePool(n) as pool``. Jobs are ``(kind, item)`` pairs where ``kind``
    names a batch function of :mod:`asyncds.worker` (``worker.BATCH_FUNCTIONS``).
    """

    def __init__(self, workers: int, *, max_batch: int = 32) -> None:
        self.size = max(1, workers)
        self.max_batch = max_batch
        self._workers: list[_Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: collections.deque[tuple[str, Any, Any, asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._wake = asyncio.Event()
        self._broken: BaseException | None = None
        self.requests = 0  # batches sent, for the curious (and the tests)
        self.jobs = 0  # jobs sent in them

    async def __aenter__(self) -> ImagePool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start every worker now (while the search runs, not in the middle of downloads)."""
        for _ in range(self.size):
            self._workers.append(await self._spawn())
        self._tasks = [
            asyncio.create_task(self._feed(w), name=f"pool-{w.process.pid}") for w in self._workers
        ]

    async def run(self, kind: str, item: Any, options: Any = None) -> Any:
        """Process one item in a worker (batched with others) and return its result."""
        if self._broken is not None:
            raise self._broken
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((kind, item, options, future))
        self._wake.set()
        return await future

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    async def map(self, kind: str, items: Sequence[Any], options: Any = None) -> list[Any]:
        """:meth:`run` for many items at once, results in order."""
        return list(await asyncio.gather(*(self.run(kind, item, options) for item in items)))

    async def close(self) -> None:
        """Stop the workers: each exits when its socket closes; a stuck one is killed."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.requests:
            log.debug(
                "imaging pool: %d jobs in %d batches (%.1f per batch)",
                self.jobs,
                self.requests,
                self.jobs / self.requests,
            )
        self._fail_pending(WorkerDied("the imaging pool was closed"))
        for w in self._workers:
            w.writer.close()
        for w in self._workers:
            try:
                await asyncio.wait_for(w.process.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.process.kill()
                await w.process.wait()
        self._workers.clear()

    async def _feed(self, worker: _Worker) -> None:
        """Send this worker the waiting jobs of one kind, a batch at a time."""
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            kind, options = self._pending[0][0], self._pending[0][2]
            batch = []
            size = 0
            while (
                self._pending
                and len(batch) < self.max_batch
                and size < _MAX_BATCH_BYTES
                and self._pending[0][0] == kind
                and self._pending[0][2] == options
            ):
                batch.append(self._pending.popleft())
                size += len(getattr(batch[-1][1], "data", None) or b"")
            self.requests += 1
            self.jobs += len(batch)
            try:
                results = await worker.request(kind, [item for _, item, _, _ in batch], options)
            except WorkerDied as exc:
                self._broken = exc
                for *_, future in batch:
                    _settle(future, exc=exc)
                self._fail_pending(exc)
                return
            except Exception as exc:  # a failed write in the worker: these jobs fail
                for *_, future in batch:
                    _settle(future, exc=exc)
                continue
            for (*_, future), result in zip(batch, results, strict=True):
                _settle(future, result=result)

    def _fail_pending(self, exc: BaseException) -> None:
        while self._pending:
            _settle(self._pending.popleft()[3], exc=exc)

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            env = dict(os.environ)
            # The child must import this very asyncds, wherever it was imported from.
            paths = (_PACKAGE_PARENT, env.get("PYTHONPATH"))
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "asyncds.worker",
                str(theirs.fileno()),
                str(os.getpid()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        return _Worker(process, reader, writer)


def _settle(future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None):
    if future.done():  # its consumer was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
