"""The progress display: what a terminal shows (rendered by a VT100 emulator), the plain lines
elsewhere, -q, and a real run of the CLI under a pseudo-terminal."""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest
from rich.console import Console
from rich.logging import RichHandler

from asyncds.cli import _Redact, setup_logging
from asyncds.pipeline import ClassProgress
from asyncds.progress import ProgressDisplay, stderr_console
from tests.e2e import REPO, cli_env, write_config

WIDTH, HEIGHT = 100, 30
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>78]")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def terminal(clock: Clock | None = None) -> tuple[Console, io.StringIO]:
    """A console that believes it draws on a WIDTH x HEIGHT terminal, and what it wrote."""
    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=True,
        width=WIDTH,
        height=HEIGHT,
        color_system="standard",
        get_time=clock,
        _environ={},  # no TERM=dumb, COLUMNS or FORCE_COLOR from the environment
    )
    return console, out


def screen(transcript: str | bytes, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    """Every line a terminal holds after ``transcript``: its scroll-back, then its screen
    (trailing blank lines dropped)."""
    vt = pyte.HistoryScreen(width, height, history=100_000)
    if isinstance(transcript, bytes):
        pyte.ByteStream(vt).feed(transcript)
    else:
        pyte.Stream(vt).feed(transcript.replace("\n", "\r\n"))  # what a tty's ONLCR does
    lines = ["".join(line[x].data for x in range(width)) for line in vt.history.top]
    lines += list(vt.display)
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def bar_lines(lines: list[str], label: str) -> list[str]:
    return [line for line in lines if re.match(rf"{label} +\S+ +\d+/\d+ good", line)]


@pytest.fixture
def records_on(request) -> Iterator[logging.Logger]:
    """A logger whose records go through RichHandler to the given console (as cli does)."""
    logger = logging.getLogger(f"asyncds.test.{request.node.name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()


def attach(logger: logging.Logger, console: Console) -> None:
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    logger.addHandler(handler)


async def test_records_print_above_the_bars_and_the_final_bars_stay_once(records_on):
    console, out = terminal()
    attach(records_on, console)
    progress = {"cat": ClassProgress("cat", 40), "dog": ClassProgress("dog", 40)}
    with ProgressDisplay(progress, console=console, refresh_s=60) as display:
        display.phase = "searching"
        for i in range(1, 41):
            progress["cat"].good = i
            progress["dog"].good = i // 2
            progress["cat"].candidates = progress["dog"].candidates = 40
            if i % 3 == 0:
                records_on.info("record %d: [bold]not markup[/bold]", i)
            if i % 7 == 0:
                records_on.warning("warning %d", i)
            display.refresh()
        display.phase = "dedup"
        records_on.info("dedup dropped 3 images")
        progress["dog"].good = 40
        display.phase = "assembling"
        display.phase = "done"
    lines = screen(out.getvalue())
    text = "\n".join(lines)
    for i in range(3, 41, 3):
        assert text.count(f"record {i}: [bold]not markup[/bold]") == 1, text
    for i in range(7, 41, 7):
        assert text.count(f"warning {i}") == 1
    assert "dedup dropped 3 images" in text
    # The live area is the last thing on the terminal, drawn once: no stale copy anywhere.
    assert [line for line in lines if line.startswith("phase:")] == lines[-4:-3]
    assert lines[-4].startswith("phase: done")
    for label, line in zip(("cat", "dog", "total"), lines[-3:], strict=True):
        assert bar_lines(lines, label) == [line], text
    assert "40/40 good" in lines[-3] and "40/40 good" in lines[-2]
    assert "80/80 good" in lines[-1] and lines[-1].endswith("done")
    # Every phase was drawn while it lasted.
    drawn = _ANSI.sub("", out.getvalue())
    for phase in ("searching", "downloading", "dedup", "assembling", "done"):
        assert f"phase: {phase}" in drawn


async def test_each_row_shows_its_counts_rate_and_what_is_left():
    clock = Clock()
    console, out = terminal(clock)
    cat = ClassProgress("cat", 10, good=10, failed=2)
    dog = ClassProgress("dog", 10, good=4, exhausted=True)
    frog = ClassProgress("frog", 100)
    progress = {"cat": cat, "dog": dog, "frog": frog}
    with ProgressDisplay(progress, console=console, refresh_s=60) as display:
        display.phase = "downloading"
        for second, good in ((1, 10), (2, 30)):
            clock.now += 1
            frog.good = good
            frog.failed = second
            display.refresh()
        lines = screen(out.getvalue())[-5:]
    assert lines[0].startswith("phase: downloading")
    cat_line, dog_line, frog_line = (bar_lines(lines, label)[0] for label in progress)
    assert "10/10 good" in cat_line and "2 dropped" in cat_line and cat_line.endswith("done")
    assert "4/10 good" in dog_line and dog_line.endswith("short: the search has no more")
    # frog: 20 images in the last second -> 20 img/s; 70 left -> 3.5 s.
    assert "30/100 good" in frog_line and "2 dropped" in frog_line
    assert "20.0 img/s" in frog_line and frog_line.endswith("ETA 00:03")
    # The total leaves out what the short class will never get: frog's 70 images.
    total = bar_lines(lines, "total")[0]
    assert "44/120 good" in total and "4 dropped" in total
    assert re.search(r"ETA 00:0\d$", total), total


async def test_the_total_says_done_with_the_short_classes():
    console, out = terminal()
    progress = {
        "cat": ClassProgress("cat", 5, good=5),
        "dog": ClassProgress("dog", 5, good=3, exhausted=True),
    }
    with ProgressDisplay(progress, console=console, refresh_s=60):
        pass
    total = bar_lines(screen(out.getvalue()), "total")
    assert len(total) == 1 and total[0].endswith("done, 1 short")


async def test_a_class_dedup_reopens_is_no_longer_done():
    clock = Clock()
    console, out = terminal(clock)
    cat = ClassProgress("cat", 10, good=10)
    with ProgressDisplay({"cat": cat}, console=console, refresh_s=60) as display:
        clock.now += 1
        cat.good = 7  # dedup dropped three
        display.refresh()
        line = bar_lines(screen(out.getvalue()), "cat")[-1]
        assert "7/10 good" in line and "ETA" in line


async def test_report_phase_from_another_thread():
    console, out = terminal()
    with ProgressDisplay({"cat": ClassProgress("cat", 1)}, console=console) as display:
        await asyncio.to_thread(display.report_phase, "archiving")
        await asyncio.sleep(0)  # the loop runs the call the thread scheduled
        assert display.phase == "archiving"
        display.report_phase("exporting")  # from the loop itself: at once
        assert display.phase == "exporting"
    drawn = _ANSI.sub("", out.getvalue())
    assert "phase: archiving" in drawn and "phase: exporting" in drawn


async def test_off_a_terminal_progress_lines_and_phase_changes_are_logged(caplog):
    caplog.set_level(logging.INFO, logger="asyncds.progress")
    out = io.StringIO()
    console = Console(file=out, _environ={})
    cat = ClassProgress("cat", 10)
    with ProgressDisplay({"cat": cat}, console=console, interval_s=0.2, refresh_s=0.05) as d:
        assert not d.live
        d.phase = "searching"
        cat.candidates = 10
        cat.good = 3
        await asyncio.sleep(0.4)
        d.phase = "dedup"
    assert out.getvalue() == ""  # nothing drawn
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncds.progress"]
    phases = [m for m in messages if m.startswith("phase: ")]
    assert phases == ["phase: searching", "phase: downloading", "phase: dedup"]
    lines = [m for m in messages if m.startswith("progress: ")]
    assert 1 <= len(lines) <= 3  # every 0.2 s, not every tick
    assert lines[0].startswith("progress: 3/10 good images; cat 3/10 good, 0 dropped")


async def test_quiet_draws_and_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="asyncds.progress")
    console, out = terminal()
    cat = ClassProgress("cat", 10)
    with ProgressDisplay({"cat": cat}, console=console, quiet=True, interval_s=0) as display:
        display.phase = "searching"
        cat.good = 5
        await asyncio.sleep(0.05)
        display.phase = "done"
    assert out.getvalue() == ""
    assert not [r for r in caplog.records if r.name == "asyncds.progress"]


# -- the console's log handler ----------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.raiseExceptions)
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.raiseExceptions = saved[2]


def test_on_a_terminal_records_go_through_rich_on_the_shared_console(root_logging, monkeypatch):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    tty = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        monkeypatch.setattr(sys, "stderr", tty)
        monkeypatch.delenv("TERM", raising=False)
        setup_logging(verbose=False, quiet=False)
        (handler,) = root_logging.handlers
        assert isinstance(handler, RichHandler) and handler.level == logging.INFO
        assert any(isinstance(f, _Redact) for f in handler.filters)
        assert handler.console is stderr_console()  # the one the display draws on
        assert ProgressDisplay({}).console is handler.console
        logging.getLogger("asyncds.x").info("GET ?api_key=SECRET9 [bold]kept[/bold]")
        logging.getLogger("asyncds.x").debug("not shown")
        tty.flush()
        written = _ANSI.sub("", os.read(master, 65536).decode())
    finally:
        tty.close()
        os.close(master)
    assert re.fullmatch(r"INFO +GET \?api_key=REDACTED \[bold\]kept\[/bold\] *\r?\n", written)


def test_off_a_terminal_records_are_plain_lines(root_logging, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    setup_logging(verbose=False, quiet=True)
    (handler,) = root_logging.handlers
    assert not isinstance(handler, RichHandler) and handler.level == logging.WARNING
    logging.getLogger("asyncds.x").warning("short: %d", 3)
    logging.getLogger("asyncds.x").info("not shown")
    assert err.getvalue() == "WARNING short: 3\n"


# -- a real run under a pseudo-terminal -------------------------------------------------------

_LOG_LINE = re.compile(r"^\S+ \S+ (INFO|WARNING) [\w.]+: (.*)$")


def run_on_a_terminal(args: list[str], *, columns: int, rows: int, timeout: float) -> bytes:
    """Run the CLI with a pseudo-terminal as its stdout and stderr; all it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = cli_env()
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    env.update(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    env["PYTHONIOENCODING"] = "utf-8"
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncds", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"the run took more than {timeout}s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the run closed its end of the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks)


@pytest.mark.slow
def test_a_run_on_a_terminal_shows_every_record_and_one_copy_of_each_bar(tmp_path: Path):
    columns, rows = 120, 30
    config = write_config(tmp_path / "c.yaml", {"cat": 150, "dog": 150})
    out = tmp_path / "out"
    transcript = run_on_a_terminal(
        [str(config), "--emulator", "--emulator-faults", "all", "--output-dir", str(out)],
        columns=columns,
        rows=rows,
        timeout=180,
    )
    lines = screen(transcript, columns, rows)
    shown = re.sub(r"\s+", "", "".join(lines))
    # Every record the console's handler had (the file log has them all, at every level).
    records = [
        m[2]
        for line in (out / "asyncds.log").read_text().splitlines()
        if (m := _LOG_LINE.match(line))
    ]
    assert any(r.startswith("time per phase") for r in records)
    for record in records:
        assert re.sub(r"\s+", "", record) in shown, (record, "\n".join(lines))
    # One copy of the live area, with the final counts; only the run's last records follow it.
    phase_lines = [i for i, line in enumerate(lines) if line.startswith("phase:")]
    assert len(phase_lines) == 1 and lines[phase_lines[0]].startswith("phase: done")
    start = phase_lines[0]
    for offset, (label, count) in enumerate((("cat", 150), ("dog", 150), ("total", 300)), 1):
        assert bar_lines(lines, label) == [lines[start + offset]], "\n".join(lines)
        assert f"{count}/{count} good" in lines[start + offset]
    after = " ".join(lines[start + 4 :])
    # ... and the ending (stdout, on the same terminal), below the bars.
    assert "time per phase" in after and "done in" in after and "load_dataset(" in after
    # The phases were shown as they came.
    drawn = _ANSI.sub("", transcript.decode(errors="replace"))
    for phase in ("searching", "downloading", "dedup", "assembling", "archiving", "done"):
        assert f"phase: {phase}" in drawn
