"""Progress on long work: a live bar per class on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from asyncds.pipeline import ClassProgress

log = logging.getLogger("asyncds.progress")


def _eta(seconds: float) -> str:
    if seconds <= 0 or seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def describe(p: ClassProgress, *, now: float, bar_width: int = 0) -> str:
    """One line for one class: good/target, failures, rate, ETA (and a bar when asked)."""
    elapsed = max(now - p.started, 1e-6)
    rate = p.good_this_run / elapsed
    if p.good >= p.target:
        state = "done"
    elif p.short:
        state = "short: the search has no more"
    else:
        state = f"ETA {_eta((p.target - p.good) / rate if rate else float('inf'))}"
    bar = ""
    if bar_width:
        filled = int(bar_width * min(1.0, p.good / p.target)) if p.target else bar_width
        bar = "[" + "#" * filled + "." * (bar_width - filled) + "] "
    return (
        f"{p.label:>12} {bar}{p.good}/{p.target} good, {p.failed} dropped, "
        f"{rate:.1f} img/s, {state}"
    )


class ProgressDisplay:
    """Redraws a block of lines on a TTY; logs a summary line every ``interval_s`` otherwise."""

    def __init__(
        self,
        progress: Mapping[str, ClassProgress],
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        interval_s: float = 15.0,
    ) -> None:
        self.progress = progress
        self.stream = stream or sys.stderr  # looked up now: tests and tools swap sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty() and not quiet
        self.interval_s = 0.5 if self.tty else interval_s
        self._drawn = 0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> ProgressDisplay:
        if not self.quiet:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        if not self.quiet:
            self.render(final=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.render()

    def render(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns
            lines = [
                describe(p, now=now, bar_width=20)[: width - 1] for p in self.progress.values()
            ]
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.stream.flush()
            self._drawn = len(lines)
        elif not final:
            good = sum(p.good for p in self.progress.values())
            target = sum(p.target for p in self.progress.values())
            log.info(
                "progress: %d/%d good images; %s",
                good,
                target,
                "; ".join(describe(p, now=now).strip() for p in self.progress.values()),
            )
