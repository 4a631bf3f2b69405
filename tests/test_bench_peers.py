"""The peer benchmark's harness (benchmarks/bench_peers.py) on a tiny set: asyncds only.

img2dataset is left out: its virtualenv takes a minute to build. No timing is asserted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import bench_peers
from benchmarks.neutral_server import DATE_HI, DATE_LO, Catalogue, NeutralServer


def _search(server: NeutralServer, **params: object) -> dict:
    query = {"tags": "c0", "extras": "url_s,date_upload", **params}
    return json.loads(server.search({k: str(v) for k, v in query.items()}))["photos"]


def test_search_honours_upload_date_windows_and_pages() -> None:
    count = 1200
    cat = Catalogue("s1", count, 2, "http://127.0.0.1:1", [(240, 180)] * count)
    server = NeutralServer(cat, [b""] * count, 0.0)
    whole = _search(server, per_page=500)
    assert whole["total"] == 600 and whole["pages"] == 2 and len(whole["photo"]) == 500
    dates = [int(p["dateupload"]) for p in whole["photo"]]
    assert dates == sorted(dates, reverse=True)  # newest first

    mid = (DATE_LO + DATE_HI) // 2
    seen: list[str] = []
    for lo, hi in ((DATE_LO, mid), (mid + 1, DATE_HI)):  # two disjoint windows cover it all
        page = 1
        while True:
            got = _search(server, per_page=100, page=page, min_upload_date=lo, max_upload_date=hi)
            assert all(lo <= int(p["dateupload"]) <= hi for p in got["photo"])
            seen += [p["id"] for p in got["photo"]]
            if page >= got["pages"]:
                break
            page += 1
    assert len(seen) == len(set(seen)) == 600  # class c0 exactly, each photo once
    assert _search(server, tags="c1", per_page=1)["photo"][0]["url_s"].endswith("/img/1199.jpg")


@pytest.mark.slow
def test_asyncds_contender_through_the_harness(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with bench_peers.start_server("s1", 60, 1, cache_dir=cache, log=tmp_path / "srv.log") as srv:
        run = bench_peers.run_asyncds(
            srv, tmp_path / "work", scenario="s1", cache_dir=cache, psnr_sample=10
        )
    assert run.returncode == 0, run.extra.get("log_tail")
    assert run.images == run.requested == 60
    assert run.extra["dedup_drops"] == 0
    assert run.image_requests == 60 and run.repeated_images == 0
    assert run.cpu_ms_per_image > 0
    assert run.main_peak_mb > 0 and run.tree_peak_mb >= run.main_peak_mb
    assert run.psnr_db == math.inf  # 240-px baseline JPEGs are stored as they are

    doc = bench_peers.results_document(
        [run], machine={"cpus": 2}, settings={"quick": True}, image_sets={}
    )
    back = json.loads(json.dumps(bench_peers._json_safe(doc)))
    assert {"machine", "settings", "runs", "medians", "gates", "date"} <= set(back)
    (stored,) = back["runs"]
    assert stored["contender"] == "asyncds" and stored["images"] == 60
    median = back["medians"]["s1"]["asyncds"]
    for key in ("images_per_s", "cpu_ms_per_image", "main_peak_mb", "tree_peak_mb", "wall_s"):
        assert median[key] > 0, key
    assert median["vs_img2dataset"] is None  # not measured here
    assert {g["met"] for g in back["gates"]} <= {True, False, None}


def test_settle_waits_for_an_idle_second_and_no_longer_than_its_limit(monkeypatch):
    # A fake clock and CPU counters: the test checks what settle does, not how long it takes.
    now = [0.0]
    counters = [0, 0]  # busy and total jiffies, advanced by each second slept
    synced: list[bool] = []
    seconds = iter([0.9, 0.5, 0.1, 0.0])  # the machine calms down in its third second

    def sleep(duration: float) -> None:
        now[0] += duration
        counters[0] += int(next(seconds) * 100)
        counters[1] += 100

    monkeypatch.setattr(bench_peers.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(bench_peers.time, "sleep", sleep)
    monkeypatch.setattr(bench_peers.os, "sync", lambda: synced.append(True))
    monkeypatch.setattr(bench_peers, "_cpu_times", lambda: (counters[0], counters[1]))
    assert bench_peers.settle(max_s=20, busy_below=0.15) == {"settle_s": 3.0, "busy_before": 0.1}
    assert synced == [True]
    # A machine that never calms down: it gives up at the limit rather than wait forever.
    now[0] = 0.0
    seconds = iter([1.0] * 50)
    assert bench_peers.settle(max_s=5, busy_below=0.15) == {"settle_s": 5.0, "busy_before": 1.0}
