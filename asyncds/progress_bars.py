"""The live bars of :mod:`asyncds.progress`, apart so that rich is imported only when a
terminal shows them (off a terminal nothing of rich is loaded)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from asyncds.progress import eta_text

if TYPE_CHECKING:
    from asyncds.progress import ProgressDisplay


class Bars(Progress):
    """rich's ``Progress`` with a header line: the phase and the time since the start."""

    def __init__(self, display: ProgressDisplay, console: Console) -> None:
        self.display = display  # before rich's constructor: it renders once
        super().__init__(
            # Three columns, the numbers in one padded text: rich measures and renders each
            # cell, and a redraw (CPU time, median) took 4.6 ms for 3 classes and 19 ms for 20
            # with a column per number, 1.7 ms and 9 ms so.
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[info]}", markup=False),
            console=console,
            auto_refresh=False,  # ProgressDisplay's asyncio task redraws; no thread
            transient=False,  # the final bars stay on screen
            redirect_stdout=False,  # stdout may go elsewhere; stray stderr lines go above
        )

    def get_renderables(self) -> Iterator[RenderableType]:
        elapsed = eta_text(time.monotonic() - self.display.started).replace("--:--", "00:00")
        yield Text.assemble(
            "phase: ", (self.display.phase or "starting", "bold"), f"  elapsed {elapsed}"
        )
        yield self.make_tasks_table(self.tasks)
