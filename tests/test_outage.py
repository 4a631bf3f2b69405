"""An outage of the image host stops the run, resumably, and never changes the dataset."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest
from aiohttp import ClientConnectorError, ServerDisconnectedError
from aiohttp.client_reqrep import ConnectionKey

from asyncds.emulator import EmulatorSettings, FaultProfile, running_emulator
from asyncds.outage import HostUnreachable, HostWatch
from asyncds.pipeline import _loopback_origin, _rebase_loopback
from tests.e2e import images, run_cli, start_cli, state_rows, wait_for_images, write_config

ARTIFACTS = ("train_test_split.json", "metadata.jsonl", "urls_data.json")


def test_host_watch_counts_silence_from_the_last_answer():
    watch = HostWatch(outage_s=30, started=time.monotonic() - 100)
    assert watch.silent_for("a") >= 100  # never answered: silent since the run started
    before = time.monotonic()
    watch.reached("a")
    assert watch.reached_since("a", before) and not watch.reached_since("b", before)
    assert watch.silent_for("a") < 1 and watch.silent_for("b") >= 100


def test_the_outage_message_says_what_to_do():
    text = str(HostUnreachable("live.staticflickr.com", 31.2, "connection refused"))
    assert "live.staticflickr.com is unreachable" in text and "31 s" in text
    assert "progress is saved" in text and "run the same command" in text


def test_only_a_loopback_api_rebases_loopback_image_urls():
    assert _loopback_origin("https://api.flickr.com/services/rest/") is None
    origin = _loopback_origin("http://127.0.0.1:4242/services/rest/")
    assert origin == "http://127.0.0.1:4242/"
    old = "http://127.0.0.1:39999/65535/123_abc_m.jpg"
    assert _rebase_loopback(old, origin) == "http://127.0.0.1:4242/65535/123_abc_m.jpg"
    real = "https://live.staticflickr.com/65535/123_abc_m.jpg"
    assert _rebase_loopback(real, origin) == real


def test_a_refused_connection_is_reported_as_unreachable():
    """What the outage logic keys on: refused, DNS and connect timeouts, not resets."""
    from asyncds.retry import NO_CONNECTION, no_connection_reason

    refused = ClientConnectorError(
        ConnectionKey("h", 1, False, True, None, None, None), ConnectionRefusedError(111, "no")
    )
    assert isinstance(refused, NO_CONNECTION)
    assert no_connection_reason(refused) == "connection refused"
    assert not isinstance(ServerDisconnectedError(), NO_CONNECTION)  # it connected


def _same_dataset(a: Path, b: Path, labels: list[str]) -> None:
    """As ``../shared/design.md`` defines it; URLs that differ only in the emulator's port
    count as equal."""
    for label in labels:
        assert images(a, label) == images(b, label), label
    for name in ARTIFACTS:
        strip = re.compile(rb"127\.0\.0\.1:\d+")
        assert strip.sub(b"E", (a / name).read_bytes()) == strip.sub(b"E", (b / name).read_bytes())


@pytest.mark.slow
async def test_an_image_host_outage_stops_the_run_and_resume_gives_the_same_dataset(tmp_path):
    classes = {"cat": 150, "dog": 150}
    faults = FaultProfile.from_mapping({"image_latency_s": 0.02})
    settings = EmulatorSettings(seed=21, faults=faults)
    config = write_config(tmp_path / "c.yaml", classes, download={"concurrency": 4, "outage_s": 3})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    async with running_emulator(settings) as emu:
        result = await run_cli(
            str(config), "--output-dir", str(straight), "-q", api_url=emu.api_url
        )
        assert result.code == 0, result.stderr

    async with running_emulator(settings) as emu:
        port, api_url = emu.port, emu.api_url
        proc = await start_cli(str(config), "--output-dir", str(resumed), "-q", api_url=api_url)
        await wait_for_images(resumed, list(classes), at_least=60)
    # The emulator (API and images) is gone: the run must stop on its own, promptly.
    began = time.monotonic()
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "image host 127.0.0.1 is unreachable" in lines[0] and "resume" in lines[0]
    assert time.monotonic() - began < 60
    dropped = [r for r in state_rows(resumed) if r["status"] == "network_error"]
    assert not dropped, "an outage must not drop a candidate"

    async with running_emulator(settings, port=port) as emu:  # the host is back
        result = await run_cli(str(config), "--output-dir", str(resumed), "-q", api_url=api_url)
        assert result.code == 0, result.stderr
    _same_dataset(straight, resumed, list(classes))


@pytest.mark.slow
async def test_transient_faults_never_trip_the_outage_stop(tmp_path):
    """Everything ``--emulator-faults all`` injects clears within the retries."""
    config = write_config(
        tmp_path / "c.yaml", {"cat": 200}, download={"concurrency": 8, "outage_s": 1}
    )
    settings = EmulatorSettings(seed=9, faults=FaultProfile.all_on())
    async with running_emulator(settings) as emu:
        result = await run_cli(
            str(config), "--output-dir", str(tmp_path / "o"), "-q", api_url=emu.api_url
        )
    assert result.code == 0, result.stderr
    assert len(images(tmp_path / "o", "cat")) == 200


@pytest.mark.slow
async def test_an_interrupted_emulator_run_resumes_to_the_same_dataset(tmp_path):
    """``--emulator`` takes a new port each run; stored URLs still lead to their images."""
    classes = {"cat": 200, "dog": 100}
    config = write_config(tmp_path / "c.yaml", classes, download={"concurrency": 4})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = await run_cli(str(config), "--emulator", "--output-dir", str(straight), "-q")
    assert result.code == 0, result.stderr

    proc = await start_cli(
        str(config), "--emulator", "--output-dir", str(resumed), "-q", log=tmp_path / "k.log"
    )
    await wait_for_images(resumed, list(classes), at_least=80)
    proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), 30)

    began = time.monotonic()
    result = await run_cli(str(config), "--emulator", "--output-dir", str(resumed), "-q")
    assert result.code == 0, result.stderr
    assert time.monotonic() - began < 120
    assert not [r for r in state_rows(resumed) if r["status"] == "network_error"]
    _same_dataset(straight, resumed, list(classes))

    # Raising a count later, on yet another port, fetches the rest without a drop.
    more = write_config(
        tmp_path / "more.yaml", {"cat": 260, "dog": 100}, download={"concurrency": 4}
    )
    result = await run_cli(str(more), "--emulator", "--output-dir", str(resumed), "-q")
    assert result.code == 0, result.stderr
    assert len(images(resumed, "cat")) == 260
    assert not [r for r in state_rows(resumed) if r["status"] == "network_error"]
