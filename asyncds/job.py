"""One dataset job, start to finish: lock, resume, search and download, dedup, assembly.

This is where the stages are wired together; each stage lives in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import itertools
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from asyncds.assembly import ASSEMBLY_VERSION, RunStats, assemble_outputs
from asyncds.assembly.exports import check_libraries, export_writers, exports_present
from asyncds.assembly.writers.preview import PREVIEW_PATTERN
from asyncds.assembly.writers.urls_parquet import URLS_PARQUET_FILE, url_record, write_urls_parquet
from asyncds.config import OUTPUT_FILE_NAMES, Config
from asyncds.dedup import apply_dedup
from asyncds.exclude import ASSEMBLED_META, apply_removals
from asyncds.files import OutputLock, remove_temp_files, write_atomic
from asyncds.flickr import Candidate, FlickrClient, collect_candidates
from asyncds.imaging import HASH_VERSION, phash_to_hex
from asyncds.pipeline import ClassProgress, Pipeline, initial_progress
from asyncds.pool import ImagePool
from asyncds.progress import ProgressDisplay
from asyncds.state import STATE_FILE, StateStore, Status
from asyncds.tidy import tidy_class_folders
from asyncds.worker import give_back_free_memory

log = logging.getLogger(__name__)

# Dedup drops replaced by more downloads: a few rounds settle it; more means a pathological search.
MAX_ROUNDS = 5
_REHASH_CHUNK = 512  # stored images per pool task when hashes are re-derived


@dataclass(frozen=True, slots=True)
class JobResult:
    short: dict[str, tuple[int, int]]  # class -> (good, requested) for classes that ended short
    api_calls: int
    wall_time_s: float


@dataclass
class PhaseTimes:
    """Wall time per phase of a job, for the log (and the benchmark that reads it)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - started

    def __str__(self) -> str:
        return ", ".join(f"{phase} {s:.2f}s" for phase, s in self.seconds.items()) or "none"


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


def pool_size() -> int:
    """Imaging workers: one per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def fresh_targets(config: Config, out_dir: Path) -> list[Path]:
    """What ``--fresh`` deletes: the state, the artifacts (previews and export shards too) and
    the configured class folders."""
    names = [*sorted(OUTPUT_FILE_NAMES), f"{STATE_FILE}-wal", f"{STATE_FILE}-shm"]
    names += [spec.name for spec in config.classes]
    targets = [out_dir / name for name in names if (out_dir / name).exists()]
    patterns = [PREVIEW_PATTERN, *(pattern for w in export_writers() for pattern in w.files)]
    shards = {p for pattern in patterns for p in out_dir.glob(pattern)}
    return targets + sorted(shards - set(targets))


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
        HASH_VERSION,
        config.classes,
        config.split,
        config.subset,
        config.dedup,
        config.image,
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()


def _artifacts_exist(out_dir: Path, config: Config) -> bool:
    # README.md, croissant.json and report.html too: a folder finished before they existed
    # gets them.
    required = (
        "train_test_split.json",
        "dataset.tgz",
        "urls_data.json",
        "summary.txt",
        "README.md",
        "croissant.json",
        "report.html",
    )
    # Exports are not in the fingerprint: one newly asked for on a finished folder is missing
    # here, which re-assembles; one no longer asked for stays until the dataset changes.
    return all((out_dir / name).is_file() for name in required) and exports_present(
        out_dir, config.export
    )


async def search_only(config: Config, *, api_key: str, out_dir: Path) -> JobResult:
    """Run only the search producers and write ``urls_data.json`` (``--search-only``)."""
    started = time.monotonic()
    check_libraries(config.export)  # fail before searching, not after
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    with OutputLock(out_dir):  # a running job owns urls_data.json: wait for it to finish
        return await _search_only(config, api_key=api_key, out_dir=out_dir, started=started)


async def _search_only(config: Config, *, api_key: str, out_dir: Path, started: float) -> JobResult:
    urls: dict[str, list[str]] = {}
    found_by_class: dict[str, list[Candidate]] = {}
    short: dict[str, tuple[int, int]] = {}
    async with flickr_client(config, api_key=api_key) as client:

        async def one(spec_index: int) -> None:
            spec = config.classes[spec_index]
            found = await collect_candidates(
                client,
                spec,
                config.flickr,
                max_side=config.image.max_side,
                limit=spec.count,
                exclude=config.exclude,
            )
            urls[spec.name] = [c.url for c in found]
            found_by_class[spec.name] = found
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
    if "urls" in config.export:  # the hand-off to img2dataset: every candidate found
        records = (url_record(c) for spec in config.classes for c in found_by_class[spec.name])
        await asyncio.to_thread(write_urls_parquet, out_dir / URLS_PARQUET_FILE, records)
    return JobResult(short=short, api_calls=calls, wall_time_s=time.monotonic() - started)


async def create_dataset(
    config: Config,
    *,
    api_key: str,
    out_dir: Path,
    quiet: bool = False,
    reassemble: bool = False,
) -> JobResult:
    """Search, download, dedup and assemble; resumes from the state in ``out_dir``.

    ``reassemble`` rewrites the artifacts even when nothing changed (the folder did: --prune).
    """
    started = time.monotonic()
    check_libraries(config.export)  # fail before downloading, not after
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
                reassemble=reassemble,
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
    reassemble: bool,
) -> JobResult:
    async with ImagePool(pool_size()) as pool:
        # The user's fixes first, whatever the fingerprint says: a good image deleted by hand
        # or newly excluded leaves the dataset and its place is filled again.
        removals = await apply_removals(state, config, out_dir)
        await rehash_stored_images(state, out_dir, pool)
        if await state.meta(ASSEMBLED_META) != _fingerprint(config):
            # New or changed dedup/split settings: re-judge what is stored before filling up.
            await apply_dedup(state, config, out_dir)
        return await _download_and_assemble(
            config,
            state,
            pool,
            api_key=api_key,
            out_dir=out_dir,
            quiet=quiet,
            started=started,
            reassemble=reassemble or removals.changed,
            blocked=removals.blocked,
        )


async def rehash_stored_images(state: StateStore, out_dir: Path, pool: ImagePool) -> int:
    """Re-derive the perceptual hash of every stored image when ``HASH_VERSION`` changed.

    A folder made by an older version keeps its images; only their hashes are computed again,
    from the files, so dedup compares like with like. Nothing is downloaded. Returns how many
    images were re-hashed.
    """
    if await state.meta("hash_version") == str(HASH_VERSION):
        return 0
    await state.flush()
    rows = iter(state.stream(statuses=[Status.OK], chunk_size=_REHASH_CHUNK))
    done = 0
    while chunk := await asyncio.to_thread(lambda: list(itertools.islice(rows, _REHASH_CHUNK))):
        paths = [os.path.join(out_dir, row.path) for row in chunk]
        hashes = await pool.map("rehash", paths)
        await state.set_phashes(
            (row.label, row.photo_id, phash_to_hex(h))
            for row, h in zip(chunk, hashes, strict=True)
            if h is not None
        )
        done += len(chunk)
    if done:
        log.info("re-derived the perceptual hashes of %d stored images (new hash version)", done)
    await state.set_meta("hash_version", str(HASH_VERSION))
    return done


async def _download_and_assemble(
    config: Config,
    state: StateStore,
    pool: ImagePool,
    *,
    api_key: str,
    out_dir: Path,
    quiet: bool,
    started: float,
    reassemble: bool,
    blocked: Mapping[str, str],
) -> JobResult:
    progress = await initial_progress(config, state)
    images_before = sum(p.good for p in progress.values())
    phases = PhaseTimes()
    with ProgressDisplay(progress, quiet=quiet) as display:
        rounds, api_calls = await _download(
            config,
            state,
            pool,
            progress,
            display,
            phases,
            api_key=api_key,
            out_dir=out_dir,
            blocked=blocked,
        )
        wall = time.monotonic() - started
        fetched = max(0, sum(p.good for p in progress.values()) - images_before)
        # The class folders hold exactly the dataset's images (an ImageFolder root): no
        # surplus, no empty class folder. Releasing surplus changes the summary: re-assemble.
        tidied = await tidy_class_folders(state, config, out_dir)
        fingerprint = _fingerprint(config)
        unchanged = rounds == 0 and not reassemble and not tidied.changed
        if (
            unchanged
            and await state.meta(ASSEMBLED_META) == fingerprint
            and _artifacts_exist(out_dir, config)
        ):
            # A rerun on a finished folder: nothing new, so no file is rewritten.
            log.info("%s is complete; nothing to do", out_dir)
        else:
            display.phase = "assembling"
            with phases.timed("assembly"):
                stats = RunStats(wall_time_s=wall, api_calls=api_calls, images_fetched=fetched)
                # Writers report "archiving" and "exporting" from the assembly's thread.
                report = await assemble_outputs(
                    state, config, out_dir, stats, on_phase=display.report_phase, pool=pool
                )
            phases.seconds["of which the archive"] = report.archive_s
            await state.set_meta(ASSEMBLED_META, fingerprint)
        display.phase = "done"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    log.info(
        "time per phase: %s; CPU of the main process %.2fs",
        phases,
        usage.ru_utime + usage.ru_stime,
    )
    short = {label: (p.good, p.target) for label, p in progress.items() if p.good < p.target}
    return JobResult(short=short, api_calls=api_calls, wall_time_s=time.monotonic() - started)


async def _download(
    config: Config,
    state: StateStore,
    pool: ImagePool,
    progress: dict[str, ClassProgress],
    display: ProgressDisplay,
    phases: PhaseTimes,
    *,
    api_key: str,
    out_dir: Path,
    blocked: Mapping[str, str],
) -> tuple[int, int]:
    """Download rounds until every class is full or exhausted (dedup may reopen a class).
    Returns the rounds run and the API calls made."""
    rounds = 0
    async with (
        flickr_client(config, api_key=api_key) as client,
        image_session(config) as session,
    ):
        for round_no in range(1, MAX_ROUNDS + 1):
            if all(p.good >= p.target or p.exhausted for p in progress.values()):
                break
            rounds = round_no
            log.debug("download round %d", round_no)
            display.phase = "searching"  # the display says "downloading" once candidates exist
            with phases.timed("search and download"):
                await Pipeline(
                    config,
                    out_dir=out_dir,
                    state=state,
                    client=client,
                    session=session,
                    pool=pool,
                    progress=progress,
                    blocked=blocked,
                ).run()
            give_back_free_memory()  # dedup and assembly then fit under the download's peak
            display.phase = "dedup"
            with phases.timed("dedup"):
                good_after_dedup = await apply_dedup(state, config, out_dir)
            for label, good in good_after_dedup.items():
                progress[label].good = good
            give_back_free_memory()
        return rounds, client.calls
