"""End to end through the CLI, as a user runs it, against the in-process Flickr emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from yarl import URL

from asyncds.emulator import EmulatorSettings, FaultProfile, running_emulator
from asyncds.emulator.faults import (
    IMAGE_TRANSIENT_FAULTS,
    photo_broken,
    photo_gone,
    transient_fault,
)
from asyncds.emulator.server import FOREIGN_IMAGE_HOST
from asyncds.state import STATE_FILE
from tests.e2e import (
    assert_clean_class_folder,
    images,
    run_cli,
    start_cli,
    state_rows,
    wait_for_images,
    write_config,
)

pytestmark = pytest.mark.slow


async def wait_for_path(path: Path, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(path.exists):
        assert asyncio.get_running_loop().time() < deadline, f"{path} did not appear"
        await asyncio.sleep(0.01)


async def test_search_only_past_the_cap_with_transient_api_faults(tmp_path: Path):
    """9,000 distinct ids of a 9,000-photo tag, 5 % of API calls failing, rate respected.

    per_page 100 makes ~100 calls, so the 5 % faults fire (all of them clear on retry).
    """
    faults = FaultProfile.from_mapping({"api_fail_105": 0.03, "api_http_503": 0.02})
    settings = EmulatorSettings(seed=7, tag_sizes={"cat": 9000}, faults=faults)
    config = write_config(
        tmp_path / "c.yaml", {"cat": 9000}, flickr={"calls_per_hour": 36000, "per_page": 100}
    )
    out = tmp_path / "out"
    async with running_emulator(settings) as emu:
        result = await run_cli(
            str(config), "--search-only", "--output-dir", str(out), api_url=emu.api_url
        )
        assert result.code == 0, result.stderr
        urls = json.loads((out / "urls_data.json").read_text())
        assert list(urls) == ["cat"]
        ids = {url.rsplit("/", 1)[1].split("_")[0] for url in urls["cat"]}
        assert len(urls["cat"]) == 9000 and len(ids) == 9000
        assert sum(emu.stats.faults.values()) > 0  # the faults really fired
        # 36,000 calls/hour = 600 a minute; the limiter's burst is 10, so no second sees
        # more than burst + rate calls, and no minute more than 600.
        assert emu.stats.max_calls_in_window(60) <= 600
        assert emu.stats.max_calls_in_window(1.0) <= 10 + 10


async def test_download_with_every_fault_reaches_each_count(tmp_path: Path):
    settings = EmulatorSettings(seed=3, faults=FaultProfile.all_on())
    classes = {"cat": 60, "dog": 50, "frog": 40}
    config = write_config(tmp_path / "c.yaml", classes)
    out = tmp_path / "out"
    async with running_emulator(settings) as emu:
        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
    assert result.code == 0, result.stderr
    for label, count in classes.items():
        assert_clean_class_folder(out, label, count)
    rows = state_rows(out)
    dropped = [r for r in rows if r["status"] not in ("ok", "pending")]
    assert dropped, "all_on() must make some candidates fail"
    assert all(r["reason"] for r in dropped), "every drop is recorded with its reason"
    statuses = {r["status"] for r in dropped}
    assert {"unavailable", "http_error"} & statuses
    stored = {r["photo_id"] for r in rows if r["status"] == "ok"}
    for r in rows:
        on_disk = (out / r["label"] / f"{r['photo_id']}.jpg").exists()
        assert on_disk == (r["status"] == "ok" and r["photo_id"] in stored), dict(r)


async def test_each_image_fault_costs_the_requests_its_cap_allows(tmp_path: Path):
    """Per photo, the emulator's request count is what the fault allows: a page served as the
    image 2, a stall 3 (a 1 s idle timeout, 4 s stalls), a 404 or placeholder 1, transient 503s
    one more than they fired; each recorded with its status and counted in the summary."""
    faults = FaultProfile(
        image_html_200_always=0.08,
        image_stall_always=0.08,
        image_404=0.08,
        image_unavailable=0.08,
        image_http_503=0.3,
        stall_s=4.0,
    )
    seed = 9
    config = write_config(tmp_path / "c.yaml", {"cat": 40}, download={"idle_timeout_s": 1})
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=seed, faults=faults)) as emu:
        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert result.code == 0, result.stderr
        requests = dict(emu.stats.image_requests)
    assert_clean_class_folder(out, "cat", 40)

    expected = {
        "image_404": ("http_error", 1),
        "image_unavailable": ("unavailable", 1),
        "image_html_200_always": ("not_image", 2),
        "image_stall_always": ("network_error", 3),
    }
    seen: set[str] = set()
    rows = state_rows(out)
    for row in rows:
        path = URL(row["url"]).path
        if row["status"] == "pending":
            assert requests.get(path, 0) == 0, dict(row)
            continue
        photo_id = int(row["photo_id"])
        kind = photo_gone(faults, seed, photo_id) or photo_broken(faults, seed, photo_id)
        if kind is None:
            name = path.rsplit("/", 1)[1].rsplit(".", 1)[0].split("_")
            identity = f"{name[0]}_{name[2] if len(name) > 2 else ''}"
            fired = 0
            while transient_fault(faults, seed, IMAGE_TRANSIENT_FAULTS, identity, fired):
                fired += 1
            kind = "image_http_503" if fired else "none"
            status, count = "ok", fired + 1
        else:
            status, count = expected[kind]
        seen.add(kind)
        assert (row["status"], requests.get(path, 0)) == (status, count), (kind, dict(row))
        assert row["attempts"] == count, dict(row)
    assert seen == {*expected, "image_http_503", "none"}, "every kind of fault must occur"

    summary = json.loads((out / "summary.json").read_text())["classes"]["cat"]["dropped"]
    for status, _ in expected.values():
        assert summary[status] == sum(r["status"] == status for r in rows) > 0, status


async def test_images_on_a_foreign_host_are_refused_and_replaced(tmp_path: Path):
    """Search answers that point a photo at another host: refused without a request, counted
    as host_not_allowed drops (summary.json and summary.txt), and replaced."""
    faults = FaultProfile(image_foreign_host=0.2)
    config = write_config(tmp_path / "c.yaml", {"cat": 50})
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=13, faults=faults)) as emu:
        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert result.code == 0, result.stderr
        requests = dict(emu.stats.image_requests)
    assert_clean_class_folder(out, "cat", 50)
    rows = state_rows(out)
    refused = [r for r in rows if r["status"] == "host_not_allowed"]
    assert refused
    for row in rows:
        foreign = URL(row["url"]).host == FOREIGN_IMAGE_HOST
        assert (row["status"] == "host_not_allowed") == (foreign and row["status"] != "pending")
    for row in refused:
        assert FOREIGN_IMAGE_HOST in row["reason"], row["reason"]
        assert row["attempts"] == 1
        assert requests.get(URL(row["url"]).path, 0) == 0  # nor asked of the emulator itself
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["cat"]["dropped"]["host_not_allowed"] == len(refused)
    assert f"host_not_allowed {len(refused)}" in (out / "summary.txt").read_text()


async def test_killed_run_resumes_to_the_same_dataset(tmp_path: Path):
    """SIGKILL at several moments (at start, in the search, mid-download, as downloads finish
    and assembly begins), resuming each time: the end result is the uninterrupted run's."""
    settings = EmulatorSettings(seed=11, faults=FaultProfile.all_on())
    classes = {"cat": 120, "boat": 80}
    config = write_config(tmp_path / "c.yaml", classes, download={"concurrency": 4})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    async with running_emulator(settings) as emu:
        result = await run_cli(
            str(config), "--output-dir", str(straight), "-q", api_url=emu.api_url
        )
        assert result.code == 0, result.stderr

        for kill_at in (0, 60, 150, sum(classes.values())):
            proc = await start_cli(
                str(config),
                "--output-dir",
                str(resumed),
                "-q",
                api_url=emu.api_url,
                log=tmp_path / f"kill-{kill_at}.log",
            )
            if kill_at == 0:
                await wait_for_path(resumed / STATE_FILE)
            else:
                await wait_for_images(resumed, list(classes), at_least=kill_at)
            helpers = _descendants(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 30)
            await asyncio.sleep(1)  # pool workers die with their parent
            assert not _alive(helpers), "a killed run must not leave processes behind"
            partial = {label: images(resumed, label) for label in classes}

            result = await run_cli(
                str(config), "--output-dir", str(resumed), "-q", api_url=emu.api_url
            )
            assert result.code == 0, result.stderr
            for label in classes:
                final = images(resumed, label)
                assert final == images(straight, label), (kill_at, label)
                # nothing finished before the kill was fetched or rewritten
                assert all(final[name] == data for name, data in partial[label].items())
            for artifact in ("train_test_split.json", "metadata.jsonl", "urls_data.json"):
                assert (resumed / artifact).read_bytes() == (straight / artifact).read_bytes()
            assert not [p for p in resumed.rglob(".part-*")]
            if kill_at < sum(classes.values()):
                shutil.rmtree(resumed)  # the next kill starts from scratch again

        # A rerun on a finished folder asks for no image and changes no file.
        requests_before = emu.stats.total_image_requests
        snapshot = _snapshot(resumed)
        result = await run_cli(str(config), "--output-dir", str(resumed), "-q", api_url=emu.api_url)
        assert result.code == 0, result.stderr
        assert emu.stats.total_image_requests == requests_before
        assert _snapshot(resumed) == snapshot


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (pool workers, the forkserver)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:"):
                children.setdefault(int(line.split()[1]), []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in state:
            alive.add(pid)
    return alive


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    skip = {"asyncds.log", ".asyncds.lock"}  # the log grows; the lock holds the pid
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip and not p.name.startswith("asyncds-state")
    }


async def test_sigint_stops_cleanly_and_the_rerun_finishes(tmp_path: Path):
    settings = EmulatorSettings(seed=5, faults=FaultProfile.from_mapping({"image_latency_s": 0.05}))
    config = write_config(tmp_path / "c.yaml", {"cat": 150}, download={"concurrency": 4})
    out = tmp_path / "out"
    async with running_emulator(settings) as emu:
        log = tmp_path / "run.log"
        proc = await start_cli(str(config), "--output-dir", str(out), api_url=emu.api_url, log=log)
        await wait_for_images(out, ["cat"], at_least=10)
        helpers = _descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 130
        assert "run the same command again to resume" in log.read_text()
        await asyncio.sleep(1)
        assert not _alive(helpers)
        assert not list(out.rglob(".part-*"))
        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert result.code == 0, result.stderr
        assert_clean_class_folder(out, "cat", 150)


async def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path):
    settings = EmulatorSettings(seed=5, faults=FaultProfile.from_mapping({"image_latency_s": 0.05}))
    config = write_config(tmp_path / "c.yaml", {"cat": 200}, download={"concurrency": 2})
    out = tmp_path / "out"
    async with running_emulator(settings) as emu:
        first = await start_cli(
            str(config), "--output-dir", str(out), "-q", api_url=emu.api_url, log=tmp_path / "1"
        )
        await wait_for_images(out, ["cat"], at_least=2)
        second = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert second.code == 1
        assert "another asyncds run" in second.stderr and "--output-dir" in second.stderr
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 130


@pytest.mark.slow
async def test_a_killed_imaging_worker_ends_the_run_with_one_line_and_resume_finishes(
    tmp_path: Path,
):
    """As the out-of-memory killer would: the run must not hang on a dead worker."""
    config = write_config(tmp_path / "c.yaml", {"cat": 600}, download={"concurrency": 8})
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=4)) as emu:
        proc = await start_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        await wait_for_images(out, ["cat"], at_least=40)
        helpers = _descendants(proc.pid)
        workers = [pid for pid in helpers if "asyncds.worker" in _cmdline(pid)]
        assert workers, helpers
        os.kill(workers[0], signal.SIGKILL)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1, err
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and "imaging worker process" in lines[0], lines
        assert "killed by signal 9" in lines[0] and "memory" in lines[0]
        await asyncio.sleep(1)
        assert not _alive(helpers), "the other worker ends with the run"

        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert result.code == 0, result.stderr
        assert len(images(out, "cat")) == 600


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""
