"""One dataset job, start to finish: lock, resume, search and download, dedup, assembly.

This is where the stages are wired together; each stage lives in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from asyncds.assemble import ASSEMBLY_VERSION, RunStats, apply_dedup, assemble_outputs
from asyncds.config import OUTPUT_FILE_NAMES, Config
from asyncds.flickr import FlickrClient, collect_candidates
from asyncds.pipeline import Pipeline, initial_progress
from asyncds.progress import ProgressDisplay
from asyncds.state import STATE_FILE, OutputLock, StateStore, remove_temp_files, write_atomic

log = logging.getLogger(__name__)

# Dedup drops replaced by more downloads: a few rounds settle it; more means a pathological search.
MAX_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class JobResult:
    short: dict[str, tuple[int, int]]  # class -> (good, requested) for classes that ended short
    api_calls: int
    wall_time_s: float


@asynccontextmanager
async def flickr_client(config: Config, *, api_key: str) -> AsyncIterator[FlickrClient]:
    timeout = aiohttp.ClientTimeout(total=config.download.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        yield FlickrClient(
            session,
            api_url=config.flickr.api_url,
            api_key=api_key,
            calls_per_hour=config.flickr.calls_per_hour,
            retry=config.flickr.retry_policy,
        )


def image_session(config: Config) -> aiohttp.ClientSession:
    """The one session every download shares: keep-alive, bounded connections, DNS cache."""
    connector = aiohttp.TCPConnector(
        limit=config.download.concurrency, limit_per_host=0, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=config.download.timeout_s),
        headers={"User-Agent": "asyncds (+https://github.com/asyncds)"},
    )


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """Pool worker initializer: a SIGKILLed run must not leave its workers behind (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process, unless ``MALLOC_ARENA_MAX`` is set.

    glibc gives threads their own arenas (up to 8 per core), and memory freed in one arena
    serves only the threads that use it. The job's threads (the executor's file writes, the
    state's thread, dedup and assembly) each kept their own high-water mark: at 50,000 images
    the run peaked 17 MB higher than with 2 arenas, in the same time (benchmarks/bench_memory).
    Call it before any thread starts. True when the cap was set; a no-op (False) where there
    is no glibc ``mallopt``.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return bool(_libc().mallopt(-8, arenas))  # M_ARENA_MAX; mallopt returns 1 on success
    except (OSError, AttributeError):
        return False


def process_pool() -> ProcessPoolExecutor:
    # spawn, not fork: forking a process that runs threads (SQLite) can deadlock a child; and
    # not forkserver, whose server outlives a SIGKILLed run. Workers are our own children, so
    # PR_SET_PDEATHSIG takes them down with us.
    return ProcessPoolExecutor(
        max_workers=max(1, os.cpu_count() or 1),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
    )


def fresh_targets(config: Config, out_dir: Path) -> list[Path]:
    """What ``--fresh`` deletes: the state, the artifacts and the configured class folders."""
    names = [*sorted(OUTPUT_FILE_NAMES), f"{STATE_FILE}-wal", f"{STATE_FILE}-shm"]
    names += [spec.name for spec in config.classes]
    return [out_dir / name for name in names if (out_dir / name).exists()]


def delete_fresh(targets: list[Path]) -> None:
    for path in targets:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _fingerprint(config: Config) -> str:
    """What the artifacts depend on besides the state: a change re-assembles them."""
    relevant = (
        ASSEMBLY_VERSION,
        config.classes,
        config.split,
        config.subset,
        config.dedup,
        config.image,
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()


def _artifacts_exist(out_dir: Path) -> bool:
    required = ("train_test_split.json", "dataset.tgz", "urls_data.json", "summary.txt")
    return all((out_dir / name).is_file() for name in required)


async def search_only(config: Config, *, api_key: str, out_dir: Path) -> JobResult:
    """Run only the search producers and write ``urls_data.json`` (``--search-only``)."""
    started = time.monotonic()
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    urls: dict[str, list[str]] = {}
    short: dict[str, tuple[int, int]] = {}
    async with flickr_client(config, api_key=api_key) as client:

        async def one(spec_index: int) -> None:
            spec = config.classes[spec_index]
            found = await collect_candidates(
                client, spec, config.flickr, max_side=config.image.max_side, limit=spec.count
            )
            urls[spec.name] = [c.url for c in found]
            log.info("%s: %d of %d candidates", spec.name, len(found), spec.count)
            if len(found) < spec.count:
                short[spec.name] = (len(found), spec.count)

        async with asyncio.TaskGroup() as group:
            for i in range(len(config.classes)):
                group.create_task(one(i))
        calls = client.calls
    ordered = {spec.name: urls[spec.name] for spec in config.classes}
    data = json.dumps(ordered, indent=1).encode()
    await asyncio.to_thread(write_atomic, out_dir / "urls_data.json", data)
    return JobResult(short=short, api_calls=calls, wall_time_s=time.monotonic() - started)


async def create_dataset(
    config: Config,
    *,
    api_key: str,
    out_dir: Path,
    quiet: bool = False,
) -> JobResult:
    """Search, download, dedup and assemble; resumes from the state in ``out_dir``."""
    started = time.monotonic()
    with OutputLock(out_dir):
        removed = await asyncio.to_thread(
            remove_temp_files, [out_dir / spec.name for spec in config.classes]
        )
        if removed:
            log.info("removed %d temporary files left by an interrupted run", removed)
        state = await StateStore.open(out_dir / STATE_FILE)
        try:
            return await _run(
                config,
                state,
                api_key=api_key,
                out_dir=out_dir,
                quiet=quiet,
                started=started,
            )
        finally:
            await asyncio.shield(state.close())


async def _run(
    config: Config,
    state: StateStore,
    *,
    api_key: str,
    out_dir: Path,
    quiet: bool,
    started: float,
) -> JobResult:
    if await state.meta("assembled") != _fingerprint(config):
        # New or changed dedup/split settings: re-judge what is stored before filling up.
        await apply_dedup(state, config, out_dir)
    progress = await initial_progress(config, state)
    images_before = sum(p.good for p in progress.values())
    pool = process_pool()
    try:
        async with (
            flickr_client(config, api_key=api_key) as client,
            image_session(config) as session,
        ):
            with ProgressDisplay(progress, quiet=quiet):
                rounds = 0
                for round_no in range(1, MAX_ROUNDS + 1):
                    if all(p.good >= p.target or p.exhausted for p in progress.values()):
                        break
                    rounds = round_no
                    log.debug("download round %d", round_no)
                    await Pipeline(
                        config,
                        out_dir=out_dir,
                        state=state,
                        client=client,
                        session=session,
                        pool=pool,
                        progress=progress,
                    ).run()
                    good_after_dedup = await apply_dedup(state, config, out_dir)
                    for label, good in good_after_dedup.items():
                        progress[label].good = good
            api_calls = client.calls
        wall = time.monotonic() - started
        fetched = sum(p.good for p in progress.values()) - images_before
        fingerprint = _fingerprint(config)
        if (
            rounds == 0
            and await state.meta("assembled") == fingerprint
            and _artifacts_exist(out_dir)
        ):
            # A rerun on a finished folder: nothing new, so no file is rewritten.
            log.info("%s is complete; nothing to do", out_dir)
        else:
            await assemble_outputs(
                state,
                config,
                out_dir,
                RunStats(wall_time_s=wall, api_calls=api_calls, images_fetched=max(0, fetched)),
            )
            await state.set_meta("assembled", fingerprint)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    short = {label: (p.good, p.target) for label, p in progress.items() if p.good < p.target}
    return JobResult(short=short, api_calls=api_calls, wall_time_s=time.monotonic() - started)
