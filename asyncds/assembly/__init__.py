"""Assembly: turn the state into the dataset's artifacts (see docs/outputs.md for each format).

One assembly is: select (pass 1 over the state: counts, the dataset's images) → split (and
subset) → one ordered pass over the dataset's rows (by path, each with its split) feeding the
writers that need rows → each writer's ``finish`` in registry order, the summary next to last
and the archive last. Each artifact is one writer (``assembly/writers/``); a new format is a
new writer file and one line in ``writers.WRITERS``.

- ``dataset.py``: :class:`DatasetIndex` (a scratch SQLite file: paths, ranks, URLs, split),
  the selection pass and the ordered pass;
- ``context.py``: what writers see (:class:`AssemblyContext`) and what assembly reports;
- ``writers/``: one file per artifact.

Every artifact is written atomically (a temporary name in the output folder, then
``os.replace``). Memory stays flat in the dataset's size: rows are streamed from the state
(``RowStream``) in two passes, never held all at once; what must be kept between them lives
in the dataset index on disk. Only the images of the dataset (per class, the first ``count``
good ones in search order) are listed and archived; surplus images found in a class folder are
not part of it (a job releases them before assembly: ``asyncds.tidy``).

Applying dedup (recording drops, deleting files) belongs to ``asyncds.dedup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asyncds.assembly.context import (
    DROP_REASONS,
    AssemblyContext,
    AssemblyReport,
    ClassSummary,
    Output,
    RunStats,
    SheetRenderer,
    class_summaries,
    class_warnings,
)
from asyncds.assembly.dataset import DatasetIndex, Rows, dataset_rows, select
from asyncds.assembly.writers import WRITERS, Writer
from asyncds.config import Config
from asyncds.files import TEMP_MARKER
from asyncds.state import StateStore

if TYPE_CHECKING:
    from asyncds.pool import ImagePool
    from asyncds.worker import SheetJob

log = logging.getLogger(__name__)

# Bump when an unchanged state and config would give other artifacts (2: the split ranks by
# SHA-256 of seed:path; 3: ATTRIBUTION.md, licenses in the summary; 4: the drop reasons
# excluded and removed_by_user in the summary): a folder assembled by an older version is then
# re-assembled.
ASSEMBLY_VERSION = 4

__all__ = [
    "ASSEMBLY_VERSION",
    "DROP_REASONS",
    "AssemblyReport",
    "ClassSummary",
    "RunStats",
    "assemble_outputs",
    "write_outputs",
]


def write_outputs(
    rows: Rows,
    config: Config,
    out_dir: Path,
    stats: RunStats,
    *,
    exhausted: Mapping[str, bool] | None = None,
    writers: Sequence[Callable[[], Writer]] = WRITERS,
    on_phase: Callable[[str], None] | None = None,
    render_sheets: SheetRenderer | None = None,
) -> AssemblyReport:
    """Write every artifact from the state's rows (blocking; run it in a thread).

    ``rows`` is read twice: all rows by class and rank (counts, missing files, selection), then
    the dataset's rows by path (the writers' ordered pass). ``exhausted`` says per class whether
    its search ran dry (for the short-class warning). ``writers`` defaults to every artifact.
    ``on_phase`` hears each writer's ``phase`` (archiving, exporting) as its finish begins.
    ``render_sheets`` renders the preview contact sheets (the job's imaging pool); without it
    they are rendered in this thread.
    """
    with DatasetIndex([spec.name for spec in config.classes]) as dataset:
        ctx = _prepare(rows, config, out_dir, stats, dataset, exhausted or {})
        ctx.render_sheets = render_sheets
        made = [make() for make in writers]
        # Every writer's leftovers go, also those of a writer this config does not want.
        _clean_stale_temps(out_dir, (name for w in made for name in w.files))
        wanted = [w for w in made if w.wanted(ctx)]
        # What a writer no longer asked for wrote earlier (an export dropped from the config)
        # would describe an older dataset: it goes.
        _remove_files(out_dir, (name for w in made if w not in wanted for name in w.files))
        timings = _run_writers(rows, ctx, wanted, on_phase)
    for warning in ctx.warnings:
        log.info("%s", warning)  # the run's ending says them again as warnings
    return AssemblyReport(
        ctx.classes,
        tuple(ctx.warnings),
        tuple(out.path for out in ctx.outputs),
        archive_s=timings.get("archive", 0.0),
        writer_s=timings,
    )


def _prepare(
    rows: Rows,
    config: Config,
    out_dir: Path,
    stats: RunStats,
    dataset: DatasetIndex,
    exhausted: Mapping[str, bool],
) -> AssemblyContext:
    """Select the dataset, split it, and sum up each class: all a writer may read."""
    selection = select(rows, config, out_dir, dataset)
    split = dataset.split(config.split)
    subset = dataset.subset(config.subset) if config.subset is not None else None
    classes = class_summaries(config, selection, dataset, split, exhausted)
    return AssemblyContext(
        config=config,
        out_dir=out_dir,
        stats=stats,
        dataset=dataset,
        split=split,
        subset=subset,
        classes=classes,
        warnings=class_warnings(classes, split),
        rows=rows,
    )


def _run_writers(
    rows: Rows,
    ctx: AssemblyContext,
    writers: Sequence[Writer],
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """start → the ordered pass (only for writers that take rows) → finish, in order; seconds
    per writer (its finish, plus its share of the pass for those that take rows)."""
    timings = dict.fromkeys((w.name for w in writers), 0.0)
    with contextlib.ExitStack() as cleanup:
        for writer in writers:
            writer.start(ctx, cleanup)
        per_row = [w for w in writers if w.per_row]
        if per_row:  # no pass at all when no writer needs rows
            clock = time.perf_counter
            for batch in dataset_rows(rows, ctx.dataset):
                for writer in per_row:
                    started = clock()
                    writer.add(batch)
                    timings[writer.name] += clock() - started
        phase = ""
        for writer in writers:
            if on_phase is not None and writer.phase != phase:
                phase = writer.phase
                on_phase(phase)
            started = time.perf_counter()
            paths = writer.finish(ctx)
            timings[writer.name] += time.perf_counter() - started
            ctx.outputs += (Output(path, writer.archived) for path in paths)
    return timings


def _clean_stale_temps(out_dir: Path, names: Iterable[str]) -> None:
    # Temporary artifacts of a run killed mid-assembly (the output lock excludes live ones).
    for name in names:
        for stale in out_dir.glob(f"{TEMP_MARKER}*-{name}"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _remove_files(out_dir: Path, patterns: Iterable[str]) -> None:
    for pattern in patterns:
        for path in out_dir.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)


async def assemble_outputs(
    state: StateStore,
    config: Config,
    out_dir: Path,
    stats: RunStats,
    *,
    on_phase: Callable[[str], None] | None = None,
    pool: ImagePool | None = None,
) -> AssemblyReport:
    """Write every artifact from the state (the blocking work, streaming reads included, runs
    in a thread). With ``pool``, the preview contact sheets are rendered in its workers: the
    assembly's thread hands them to the event loop and waits (the loop is free meanwhile: it
    only awaits this thread)."""
    await state.flush()  # the stream reads only what is committed
    exhausted = {
        spec.name: (await state.search_state(spec.name)).exhausted for spec in config.classes
    }
    render = None if pool is None else _pool_renderer(pool, asyncio.get_running_loop())
    report = await asyncio.to_thread(
        write_outputs,
        state.stream(),
        config,
        out_dir,
        stats,
        exhausted=exhausted,
        on_phase=on_phase,
        render_sheets=render,
    )
    log.info(
        "dataset: %d images in %d classes written to %s",
        sum(report.counts.values()),
        len(report.classes),
        out_dir,
    )
    return report


# Long enough for any number of sheets (48 small decodes each), short of a hang for ever if the
# loop went away while this thread waited.
_SHEETS_TIMEOUT_S = 900.0


def _pool_renderer(pool: ImagePool, loop: asyncio.AbstractEventLoop) -> SheetRenderer:
    """A :data:`SheetRenderer` for the assembly's thread: the sheets go to ``pool`` through
    the event loop (the pool is the loop's; this thread only waits for the answer)."""

    def render(jobs: Sequence[SheetJob]) -> list[int]:
        future = asyncio.run_coroutine_threadsafe(pool.map("sheet", list(jobs)), loop)
        return future.result(timeout=_SHEETS_TIMEOUT_S)

    return render
