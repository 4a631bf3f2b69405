"""Progress on long work: live bars on a terminal, periodic log lines elsewhere.

On a terminal a rich ``Progress`` shows the job's phase, one bar per class and a total bar
(good/target, dropped, images/s, ETA). The console's log handler (``RichHandler``, installed by
``cli.setup_logging``) writes on the same :func:`stderr_console`, so rich prints every record
above the live area: nothing drawn is overwritten and no stale copy of a bar is left. When the
job ends the live area stays, drawn once more with the final counts.

No thread redraws: an asyncio task copies the ``ClassProgress`` counters into the bars every
``refresh_s`` and redraws a few rows, a cost the event loop does not notice; no per-image code
path knows about the display. Off a terminal the task logs a ``progress:`` line every
``interval_s`` and each phase change once; ``quiet`` shows nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Task, TaskID

    from asyncds.pipeline import ClassProgress
    from asyncds.progress_bars import Bars

log = logging.getLogger("asyncds.progress")

# What a job reports, in order (``ProgressDisplay.phase``); "archiving" and "exporting" come
# from the assembly step through ``ProgressDisplay.report_phase``.
PHASES = ("searching", "downloading", "dedup", "assembling", "archiving", "exporting", "done")

_console: Console | None = None


def stderr_console() -> Console:
    """The console on the current ``sys.stderr``, shared by the live display and the log
    handler (a new one only when ``sys.stderr`` itself was replaced, as tests do)."""
    from rich.console import Console

    global _console
    stream = getattr(sys.stderr, "rich_proxied_file", sys.stderr)  # a live display's proxy
    if _console is None or _console.file is not stream:
        _console = Console(file=stream)
    return _console


def is_live_terminal(console: Console) -> bool:
    """Whether ``console`` can redraw in place (a terminal that is not ``TERM=dumb``)."""
    return console.is_terminal and not console.is_dumb_terminal


def stderr_is_live_terminal() -> bool:
    """:func:`is_live_terminal` for stderr, without loading rich when stderr is no terminal:
    off a terminal (a pipe, a log file, CI) rich would only cost memory (about 6 MB)."""
    stream = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    return is_live_terminal(stderr_console())


def eta_text(seconds: float) -> str:
    if seconds <= 0 or seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def describe(p: ClassProgress, *, now: float) -> str:
    """One line for one class: good/target, failures, rate, ETA (the off-terminal line)."""
    elapsed = max(now - p.started, 1e-6)
    rate = p.good_this_run / elapsed
    if p.good >= p.target:
        state = "done"
    elif p.short:
        state = "short: the search has no more"
    else:
        state = f"ETA {eta_text((p.target - p.good) / rate if rate else float('inf'))}"
    return f"{p.label} {p.good}/{p.target} good, {p.failed} dropped, {rate:.1f} img/s, {state}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a thread without a loop
        return None


class ProgressDisplay:
    """Bars on a terminal, a log line every ``interval_s`` otherwise; nothing when ``quiet``.

    Use as a context manager inside the event loop; the job sets :attr:`phase`.
    """

    def __init__(
        self,
        progress: Mapping[str, ClassProgress],
        *,
        console: Console | None = None,
        quiet: bool = False,
        interval_s: float = 15.0,
        refresh_s: float = 0.5,
    ) -> None:
        self.progress = progress
        self.quiet = quiet
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.started = time.monotonic()
        self._last_line = self.started
        self._phase = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._bars: Bars | None = None
        self._rows: dict[str, Task] = {}
        self.console = console  # the one the bars draw on; None off a terminal
        # rich is loaded only for a live terminal (looked up now: tests swap sys.stderr).
        live = console is not None and is_live_terminal(console)
        if not quiet and (live or (console is None and stderr_is_live_terminal())):
            from rich.markup import escape

            from asyncds.progress_bars import Bars

            self.console = console or stderr_console()
            self._bars = Bars(self, self.console)
            for label in progress:
                self._rows[label] = self._add_row(escape(label))
            self._total = self._add_row("[bold]total")

    @property
    def live(self) -> bool:
        """Whether the bars are drawn (on a terminal, not quiet)."""
        return self._bars is not None

    def _add_row(self, description: str) -> Task:
        assert self._bars is not None
        task_id: TaskID = self._bars.add_task(description, total=None, info="")
        return next(task for task in self._bars.tasks if task.id == task_id)

    # -- the phase -------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        if name == self._phase:
            return
        self._phase = name
        if self.quiet:
            return
        if self._bars is not None:
            log.debug("phase: %s", name)  # the live area shows it; the file log keeps it
            self._redraw()
        else:
            log.info("phase: %s", name)

    def report_phase(self, name: str) -> None:
        """Set the phase from any thread: the hook for work that runs off the event loop
        (the assembly step reports "archiving", an export step "exporting")."""
        loop = self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            self.phase = name
        else:
            loop.call_soon_threadsafe(setattr, self, "phase", name)

    # -- the context -----------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        if self.quiet:
            return self
        self._loop = asyncio.get_running_loop()
        if self._bars is not None:
            self._copy_counters()
            self._bars.start()
        self._task = self._loop.create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._bars is not None:
            self._copy_counters()
            self._bars.stop()  # draws the final bars once more and leaves them

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            self.refresh()

    def refresh(self) -> None:
        """One tick: redraw the bars, or log the progress line when it is due."""
        if self._phase == "searching" and any(p.candidates for p in self.progress.values()):
            self.phase = "downloading"  # redraws too
        if self._bars is not None:
            self._redraw()
            return
        now = time.monotonic()
        if not self.quiet and now - self._last_line >= self.interval_s:
            self._last_line = now
            self.log_line(now)

    def log_line(self, now: float) -> None:
        good = sum(p.good for p in self.progress.values())
        target = sum(p.target for p in self.progress.values())
        log.info(
            "progress: %d/%d good images; %s",
            good,
            target,
            "; ".join(describe(p, now=now) for p in self.progress.values()),
        )

    # -- the bars --------------------------------------------------------------------------

    def _redraw(self) -> None:
        if self._bars is not None and self._bars.live.is_started:
            self._copy_counters()
            self._bars.refresh()

    def _copy_counters(self) -> None:
        """The counters into the bars: a few assignments and one short string per class."""
        bars = self._bars
        assert bars is not None
        now = time.monotonic()
        classes = self.progress.values()
        width = len(str(sum(p.target for p in classes)))  # the rows' numbers line up
        left = short = 0
        for label, p in self.progress.items():
            row = self._rows[label]
            self._count(bars, row, p.good, p.target, p.good_this_run / max(now - p.started, 1e-6))
            if p.good >= p.target:
                state = "done"
            elif p.short:
                state = "short: the search has no more"
                short += 1
            else:
                state = self._eta_of(row, p.target - p.good)
                left += p.target - p.good
            row.fields["info"] = self._info(row, p.failed, state, width)
        total = self._total
        good = sum(p.good for p in classes)
        average = sum(p.good_this_run for p in classes) / max(now - self.started, 1e-6)
        self._count(bars, total, good, sum(p.target for p in classes), average)
        state = f"done, {short} short" if short else "done"
        if left:  # what the short classes will never get is not waited for
            state = self._eta_of(total, left)
        total.fields["info"] = self._info(total, sum(p.failed for p in classes), state, width)

    @staticmethod
    def _count(bars: Bars, row: Task, good: int, target: int, average: float) -> None:
        """One row's bar. Its rate is rich's over the last 30 s; once the row is complete,
        ``average``, the images/s of the whole run."""
        if row.finished_time is not None and good < target:  # dedup took some back
            row.finished_time = row.finished_speed = None
        was_finished = row.finished_time is not None
        bars.update(row.id, completed=good, total=target)
        if row.finished_time is not None and not was_finished:
            row.finished_speed = average

    @staticmethod
    def _info(row: Task, failed: int, state: str, width: int) -> str:
        speed = row.finished_speed or row.speed
        counts = f"{row.completed:.0f}/{row.total or 0:.0f}"
        rate = f"{speed:7.1f}" if speed else "      –"
        return f"{counts:>{2 * width + 1}} good {failed:>{width}} dropped {rate} img/s  {state}"

    @staticmethod
    def _eta_of(row: Task, left: int) -> str:
        speed = row.speed
        return f"ETA {eta_text(left / speed if speed else float('inf'))}"
