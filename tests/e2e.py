"""Helpers for end-to-end tests: configs, the CLI as a user runs it, and output checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image

from asyncds.emulator import EMULATOR_API_KEY
from asyncds.files import TEMP_MARKER
from asyncds.state import STATE_FILE

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, classes: dict[str, int], **sections: object) -> Path:
    """A config with fast retries (tests must not sleep for real backoffs)."""
    data: dict[str, object] = {
        "classes": [{"name": name, "count": count} for name, count in classes.items()],
        "train_test_split": {"seed": 42, "type": "proportional", "test_size": 20},
        "flickr": {"backoff_s": 0.01, "calls_per_hour": 360000},
        "download": {"concurrency": 16, "timeout_s": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # type: ignore[dict-item]
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def cli_env(api_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "API_SECRET")}
    env["PYTHONPATH"] = str(REPO)
    if api_url:
        env["FLICKR_API_URL"] = api_url
        env["API_KEY"] = EMULATOR_API_KEY
    return env


async def start_cli(
    *args: str, api_url: str | None = None, log: Path | None = None
) -> asyncio.subprocess.Process:
    """Start the CLI; with ``log``, its output goes to that file instead of pipes (a killed
    run's pipes could otherwise be held open by its orphans and hang ``wait()``)."""
    out = open(log, "wb") if log else asyncio.subprocess.PIPE  # noqa: SIM115, ASYNC230
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "asyncds",
            *args,
            env=cli_env(api_url),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT if log else asyncio.subprocess.PIPE,
            cwd=REPO,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


async def run_cli(*args: str, api_url: str | None = None, timeout: float = 240) -> Result:
    proc = await start_cli(*args, api_url=api_url)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def images(out_dir: Path, label: str) -> dict[str, bytes]:
    folder = out_dir / label
    if not folder.is_dir():
        return {}
    found = {}
    for p in sorted(folder.glob("*.jpg")):
        if p.name.startswith(TEMP_MARKER):
            continue  # a download in flight
        with contextlib.suppress(FileNotFoundError):  # replaced while we looked
            found[p.name] = p.read_bytes()
    return found


def state_rows(out_dir: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(out_dir / STATE_FILE)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM candidates ORDER BY label, seq").fetchall()
    finally:
        conn.close()


def assert_clean_class_folder(out_dir: Path, label: str, count: int, max_side: int = 240) -> None:
    """Exactly ``count`` readable RGB JPEGs, none bigger than max_side, no temporary files."""
    folder = out_dir / label
    names = sorted(p.name for p in folder.iterdir())
    assert all(name.endswith(".jpg") and not name.startswith(".") for name in names), names
    assert len(names) == count, (label, len(names), count)
    for name in names:
        with Image.open(folder / name) as im:
            im.load()
            assert im.format == "JPEG" and im.mode == "RGB"
            assert max(im.size) <= max_side


async def wait_for_images(out_dir: Path, labels: list[str], at_least: int, timeout: float = 60):
    """Wait until the class folders hold ``at_least`` images in all (a run is under way)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if sum(len(images(out_dir, label)) for label in labels) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} images appeared in {timeout}s")
