"""``python -m asyncds plan``: one search call per class, estimates, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncds.cli import EXIT_OK, main
from asyncds.emulator import EmulatorSettings, EmulatorThread
from asyncds.plan import api_time_s, disk_estimate, search_calls
from tests.e2e import write_config


def test_search_calls_count_pages_margin_and_date_windows():
    assert search_calls(100, 6000, 500) == 1 + 2  # one page; past the cap, a window to find
    assert search_calls(100, 300, 500) == 1
    assert search_calls(0, 0, 500) == 1  # the call that finds nothing
    assert search_calls(10_000, 3000, 500) == 6  # all 3,000 matches, no windows
    # 20,000 wanted, 10 % margin: 22,000 read in 44 pages and 6 windows of <= 4,000
    assert search_calls(20_000, 1_000_000, 500) == 44 + 2 * 6


def test_api_time_follows_the_keys_rate_after_the_burst():
    assert api_time_s(5, 3600) == 0  # within the first burst
    # An hour's budget takes a little over an hour: the limiter keeps every minute within
    # its share, so its steady rate is below calls_per_hour / 3600 (flickr.limiter_parameters).
    assert 3600 <= api_time_s(3600, 3600) <= 1.2 * 3600


def test_disk_estimate_scales_with_the_area():
    assert disk_estimate(1000, 480) == 4 * disk_estimate(1000, 240)


@pytest.fixture
def emulator(monkeypatch):
    settings = EmulatorSettings(seed=1, tag_sizes={"cat": 9000, "axolotl": 40})
    with EmulatorThread(settings) as emu:
        monkeypatch.setenv("API_KEY", "emulator-key")
        monkeypatch.setenv("FLICKR_API_URL", emu.api_url)
        yield emu


def test_plan_makes_one_search_per_class_and_writes_nothing(tmp_path: Path, capsys, emulator):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 5000, "axolotl": 100}, output_dir=str(out))
    assert main(["plan", str(config)]) == EXIT_OK
    text = capsys.readouterr().out
    assert emulator.stats.api_methods["flickr.photos.search"] == 2
    assert emulator.stats.total_image_requests == 0
    assert not out.exists()
    cat = next(line for line in text.splitlines() if line.startswith("cat"))
    assert "9,000" in cat and "5,000" in cat and "full" in cat
    axolotl = next(line for line in text.splitlines() if line.startswith("axolotl"))
    assert "short (40)" in axolotl
    assert "API calls: about" in text and "calls an hour" in text and "disk: about" in text
    assert "short: axolotl" in text


def test_plan_with_the_built_in_emulator(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("API_KEY", raising=False)
    config = write_config(tmp_path / "c.yaml", {"cat": 100}, output_dir=str(tmp_path / "o"))
    assert main(["plan", str(config), "--emulator"]) == EXIT_OK
    assert "cat" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()
