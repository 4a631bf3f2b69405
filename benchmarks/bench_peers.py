"""asyncds against img2dataset 1.47 and the original's sequential loop, side by side in one run.

Every contender downloads the same URLs from one neutral server (``benchmarks.neutral_server``,
a process of its own, lean, shared by all) and stores 240-px JPEGs; each run is measured by a
separate measuring process (``benchmarks.proctree``): wall time, CPU time of the whole process
tree, peak memory of the main process and of the tree. See ``benchmarks/README.md``.

    python -m benchmarks.bench_peers [--quick] [--rounds N] [--scenarios s1,s1+50ms,s2,s3]
        [--contenders asyncds,img2dataset,sequential] [--threads T] [--calibrate]
        [--asyncds-python PATH] [--keep DIR]

Contenders:

- ``asyncds``: the real CLI (``python -m asyncds cfg.yaml -q``) at its defaults, against the
  server's Flickr API (search + download + dedup + split + archive). ``flickr.calls_per_hour``
  is raised so the real key's 3,600 calls/hour does not bind: this measures downloading.
- ``img2dataset``: 1.47.0, installed by this benchmark into ``benchmarks/.venv-img2dataset``
  (its pins clash with ours), given the URL list for free, ``--resize_mode keep_ratio_largest
  --image_size 240 --processes_count 2 --encode_quality 90 --output_format files``.
- ``sequential``: the original project's loop: one ``urllib`` GET at a time, Pillow
  ``thumbnail((240, 240))``, save; measured on a sample and extrapolated (images/s).

Scenarios: ``s1`` 20,000 240-px JPEGs (asyncds stores them as they are), ``s1+50ms`` the same
with 50 ms of latency per image, ``s2`` 5,000 1024x768 JPEGs (about 170 kB) reduced to 240 px,
``s3`` asyncds alone at 5,000 and 50,000 images of the ``s1`` kind (is memory flat?).

Rounds: three by default (medians), the contenders' order rotating from round to round. Before
every run the machine settles (:func:`settle`: ``sync``, then an idle second, at most 20 s), so
no contender pays for the writeback and file deletions the one before it left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.neutral_server import (
    CHUNK,
    DEFAULT_CACHE,
    PHOTO_ID_BASE,
    Catalogue,
    _chunk_path,
    ensure_images,
    load_images,
    min_phash_distance,
)
from benchmarks.proctree import TreeMeasure, measure_in_subprocess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
I2D_VENV = HERE / ".venv-img2dataset"
I2D_VERSION = "1.47.0"
# img2dataset --thread_count: the best of 16/32/64/128/256 on s1 here (`--calibrate`, README).
BEST_THREADS = 128
CONTENDERS = ("asyncds", "img2dataset", "sequential")
DEDUP_REASONS = ("duplicate", "near_duplicate", "cross_class")
CLASS_SIZE = 5000  # images per asyncds class (a class's tag selects its block of the catalogue)
CALLS_PER_HOUR = 36_000_000  # far above anything a run makes: the API budget must not bind
LANCZOS = Image.Resampling.LANCZOS
MB = 1024  # kiB per MB (MiB, as /proc reports kiB)

# The original project's loop: one request at a time, Pillow's thumbnail, save.
SEQUENTIAL_LOOP = r"""
import io, os, re, sys, urllib.request
from PIL import Image
urls, out = open(sys.argv[1]).read().split(), sys.argv[2]
os.makedirs(out, exist_ok=True)
for url in urls:
    with urllib.request.urlopen(url, timeout=30) as r:
        data = r.read()
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im.thumbnail((240, 240))
    im.save(os.path.join(out, re.search(r"(\d+)\.jpg$", url).group(1) + ".jpg"), quality=90)
"""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: str  # neutral_server image kind
    counts: tuple[int, ...]  # images per run (s3 has two)
    latency_ms: float
    sequential_count: int  # images the sequential loop fetches (extrapolated to images/s)
    contenders: tuple[str, ...]
    repeat: bool = True  # run in every round (s3 runs once)


def scenarios(quick: bool) -> dict[str, Scenario]:
    full = not quick
    return {
        "s1": Scenario(
            "s1", "s1", (20000 if full else 3000,), 0, 1000 if full else 500, CONTENDERS
        ),
        "s1+50ms": Scenario(
            "s1+50ms", "s1", (20000 if full else 3000,), 50, 400 if full else 200, CONTENDERS
        ),
        "s2": Scenario("s2", "s2", (5000 if full else 800,), 0, 1000 if full else 300, CONTENDERS),
        "s3": Scenario(
            "s3",
            "s1",
            (5000, 50000) if full else (1000, 5000),
            0,
            0,
            ("asyncds",),
            repeat=False,
        ),
    }


# -- the server -------------------------------------------------------------------------------


@dataclass
class ServerProc:
    """A running ``neutral_server`` process (a child of this one, never of a measuring one)."""

    proc: subprocess.Popen[str]
    port: int
    catalogue: Catalogue  # without sizes: enough for urls and class_of

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/rest/"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/stats/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()


@contextlib.contextmanager
def start_server(
    kind: str,
    count: int,
    classes: int,
    latency_ms: float = 0.0,
    cache_dir: Path = DEFAULT_CACHE,
    log: Path | None = None,
    timeout_s: float = 300.0,
) -> Iterator[ServerProc]:
    """Start the neutral server and wait until it prints ``READY <port>``."""
    ensure_images(kind, count, cache_dir)  # here, not in the server: no readiness timeout
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.neutral_server",
        f"--kind={kind}",
        f"--count={count}",
        f"--classes={classes}",
        f"--latency-ms={latency_ms}",
        f"--cache-dir={cache_dir}",
    ]
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.startswith("READY"):
                break
        if not line.startswith("READY"):
            raise RuntimeError(f"the neutral server did not start (exit {proc.poll()})")
        port = int(line.split()[1])
        yield ServerProc(
            proc, port, Catalogue(kind, count, classes, f"http://127.0.0.1:{port}", [])
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            err.close()  # type: ignore[union-attr]


def classes_for(count: int, class_size: int = CLASS_SIZE) -> int:
    return max(1, min(count, math.ceil(count / class_size)))


# -- runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One contender's run of one scenario."""

    scenario: str
    contender: str
    round: int
    requested: int  # images asked for (the sample size for the sequential loop)
    images: int  # images on disk afterwards
    wall_s: float
    images_per_s: float
    cpu_ms_per_image: float
    cpu_user_s: float
    cpu_sys_s: float
    main_peak_mb: float
    tree_peak_mb: float
    rss_sum_max_mb: float
    processes: int
    load1: float  # 1-minute load average just before the run
    returncode: int
    psnr_db: float | None = None
    image_requests: int = 0  # what the server saw
    repeated_images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _run_from(
    scenario: str,
    contender: str,
    round_: int,
    requested: int,
    images: int,
    m: TreeMeasure,
    load1: float,
) -> Run:
    return Run(
        scenario=scenario,
        contender=contender,
        round=round_,
        requested=requested,
        images=images,
        wall_s=round(m.wall_s, 3),
        images_per_s=round(images / m.wall_s, 2) if m.wall_s > 0 else 0.0,
        cpu_ms_per_image=round(m.cpu_s * 1000 / images, 3) if images else math.inf,
        cpu_user_s=round(m.cpu_user_s, 3),
        cpu_sys_s=round(m.cpu_sys_s, 3),
        main_peak_mb=round(m.main_peak_kib / MB, 1),
        tree_peak_mb=round(m.tree_peak_kib / MB, 1),
        rss_sum_max_mb=round(m.rss_sum_max_kib / MB, 1),
        processes=m.processes,
        load1=round(load1, 2),
        returncode=m.returncode,
        extra={"peaks_kib": m.peaks_kib, "killed": m.killed},
    )


# Before each run: the machine is let settle, so that no contender pays for the previous one's
# leftovers (its dirty pages being written back, processes still exiting; run folders are only
# deleted at the end). Without it, asyncds measured right after an img2dataset round needed 2.14 ms
# of CPU per image against 1.31 ms in the same run's first round (benchmarks/README.md).
SETTLE_MAX_S = 20.0
SETTLE_BUSY = 0.15  # fraction of all CPUs busy (over 1 s) below which the machine counts as idle


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def settle(max_s: float = SETTLE_MAX_S, busy_below: float = SETTLE_BUSY) -> dict[str, float]:
    """Flush every dirty page (``sync``), then wait until the CPUs are idle for a second, at
    most ``max_s``; how long it took and the last second's busy fraction."""
    started = time.perf_counter()
    os.sync()
    busy = 1.0
    while time.perf_counter() - started < max_s:
        b0, t0 = _cpu_times()
        time.sleep(1.0)
        b1, t1 = _cpu_times()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy < busy_below:
            break
    return {"settle_s": round(time.perf_counter() - started, 1), "busy_before": round(busy, 2)}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "API_SECRET")}
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@functools.cache
def _asyncds_dir(python: str) -> str | None:
    return _probe_asyncds(python).get("asyncds_dir")


def _phase_times(log: Path) -> dict[str, float]:
    """asyncds's own phase times, from the last "time per phase:" line of its log."""
    found: dict[str, float] = {}
    if log.exists():
        lines = [line for line in log.read_text().splitlines() if "time per phase:" in line]
        if lines:
            text = lines[-1].split("time per phase:", 1)[1].split(";")[0]
            for item in text.split(","):
                name, _, seconds = item.strip().rpartition(" ")
                with contextlib.suppress(ValueError):
                    found[name] = float(seconds.rstrip("s"))
    return found


def run_asyncds(
    server: ServerProc,
    work: Path,
    *,
    scenario: str,
    round_: int = 1,
    python: str = sys.executable,
    psnr_sample: int = 100,
    cache_dir: Path = DEFAULT_CACHE,
) -> Run:
    """The real CLI at its defaults in a fresh folder; summary.json's drops and timings."""
    cat = server.catalogue
    run_dir = work / f"{scenario}-asyncds-r{round_}-{cat.count}"
    run_dir.mkdir(parents=True)
    out = run_dir / "out"
    config = run_dir / "bench.yaml"
    lines = ["classes:"]
    lines += [f"  - {{name: {cat.tag(k)}, count: {n}}}" for k, n in enumerate(cat.class_sizes())]
    lines += [
        # config.yaml's split; a class of 500 or fewer (tests) cannot hold 500 test images.
        "train_test_split: {seed: 42, type: absolute, test_size: 500}"
        if min(cat.class_sizes()) > 500
        else "train_test_split: {seed: 42, type: proportional, test_size: 10}",
        f"flickr: {{calls_per_hour: {CALLS_PER_HOUR}}}",
    ]
    config.write_text("\n".join(lines) + "\n")
    env = _clean_env(FLICKR_API_URL=server.api_url, API_KEY="bench")
    cmd = [python, "-m", "asyncds", str(config), "--output-dir", str(out), "-q"]
    revision = asyncds_revision(_asyncds_dir(python))
    server.reset()
    load1 = os.getloadavg()[0]
    # cwd is the run folder: `-m asyncds` must import the installed asyncds of `python`.
    m = measure_in_subprocess(cmd, env=env, cwd=run_dir, log=run_dir / "contender.log")
    stats = server.stats()
    images = sum(1 for k in range(cat.classes) for _ in (out / cat.tag(k)).glob("*.jpg"))
    run = _run_from(scenario, "asyncds", round_, cat.count, images, m, load1)
    run.extra["asyncds_commit"] = revision
    run.image_requests, run.repeated_images = stats["image_requests"], stats["repeated_images"]
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        dropped = summary.get("totals", {}).get("dropped", {})
        timings = _phase_times(out / "asyncds.log")
        run.extra.update(
            dedup_drops=sum(int(dropped.get(r, 0)) for r in DEDUP_REASONS),
            drops={k: v for k, v in dropped.items() if v},
            good=summary.get("totals", {}).get("good"),
            timings=timings,
            asyncds_wall_s=summary.get("run", {}).get("wall_time_s"),
            api_calls=summary.get("run", {}).get("api_calls"),
        )
        archive = timings.get("of which the archive")
        if isinstance(archive, int | float):
            run.extra["archive_share"] = round(archive / m.wall_s, 4)
    else:
        run.extra.update(dedup_drops=None, error="no summary.json")
    if m.returncode != 0:
        run.extra["log_tail"] = _tail(run_dir / "contender.log")
    if psnr_sample:

        def stored(i: int) -> Path:
            return out / cat.tag(cat.class_of(i)) / f"{PHOTO_ID_BASE + i}.jpg"

        run.psnr_db = sample_psnr(cat, stored, psnr_sample, cache_dir)
    return run


def ensure_img2dataset(venv: Path = I2D_VENV) -> str:
    """img2dataset's version in its own venv, creating it (and installing) when missing."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"]
    if py.exists():
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == I2D_VERSION:
            return I2D_VERSION
    print(f"installing img2dataset {I2D_VERSION} into {venv} (about a minute)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"img2dataset=={I2D_VERSION}"], check=True
    )
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def run_img2dataset(
    server: ServerProc,
    work: Path,
    *,
    scenario: str,
    round_: int = 1,
    threads: int = BEST_THREADS,
    venv: Path = I2D_VENV,
    psnr_sample: int = 100,
    cache_dir: Path = DEFAULT_CACHE,
) -> Run:
    """img2dataset's CLI on the catalogue's URL list, two processes, ``threads`` each."""
    cat = server.catalogue
    run_dir = work / f"{scenario}-img2dataset-t{threads}-r{round_}"
    run_dir.mkdir(parents=True)
    urls = run_dir / "urls.txt"
    urls.write_text("\n".join(cat.urls()) + "\n")
    out = run_dir / "out"
    # At least two shards per process, so both processes work to the end.
    per_shard = min(10000, math.ceil(cat.count / 4))
    cmd = [
        str(venv / "bin" / "img2dataset"),
        f"--url_list={urls}",
        "--input_format=txt",
        f"--output_folder={out}",
        "--output_format=files",
        "--resize_mode=keep_ratio_largest",
        "--image_size=240",
        "--processes_count=2",
        f"--thread_count={threads}",
        "--encode_quality=90",
        f"--number_sample_per_shard={per_shard}",
        "--enable_wandb=False",
        "--distributor=multiprocessing",
    ]
    env = _clean_env(NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
    server.reset()
    load1 = os.getloadavg()[0]
    m = measure_in_subprocess(cmd, env=env, cwd=run_dir, log=run_dir / "contender.log")
    stats = server.stats()
    images = sum(1 for _ in out.glob("*/*.jpg"))
    run = _run_from(scenario, "img2dataset", round_, cat.count, images, m, load1)
    run.image_requests, run.repeated_images = stats["image_requests"], stats["repeated_images"]
    counts = {"successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
    for f in out.glob("*_stats.json"):
        shard = json.loads(f.read_text())
        for key in counts:
            counts[key] += int(shard.get(key, 0))
    run.extra.update(threads=threads, per_shard=per_shard, **counts)
    if m.returncode != 0 or images < cat.count:
        run.extra["log_tail"] = _tail(run_dir / "contender.log")
    if psnr_sample:
        by_index: dict[int, Path] = {}
        for meta in out.glob("*/*.json"):
            url = json.loads(meta.read_text()).get("url", "")
            found = re.search(r"/img/(\d+)\.jpg$", url)
            if found and meta.with_suffix(".jpg").exists():
                by_index[int(found.group(1))] = meta.with_suffix(".jpg")
        run.psnr_db = sample_psnr(
            cat, lambda i: by_index.get(i, run_dir / "missing"), psnr_sample, cache_dir
        )
    return run


def run_sequential(
    server: ServerProc,
    work: Path,
    *,
    scenario: str,
    count: int,
    round_: int = 1,
    psnr_sample: int = 100,
    cache_dir: Path = DEFAULT_CACHE,
) -> Run:
    """The original's loop on ``count`` URLs spread over the catalogue; images/s extrapolates."""
    cat = server.catalogue
    run_dir = work / f"{scenario}-sequential-r{round_}"
    run_dir.mkdir(parents=True)
    count = min(count, cat.count)
    picked = [cat.count * k // count for k in range(count)]
    urls = run_dir / "urls.txt"
    urls.write_text("\n".join(cat.url(i) for i in picked) + "\n")
    out = run_dir / "out"
    server.reset()
    load1 = os.getloadavg()[0]
    cmd = [sys.executable, "-c", SEQUENTIAL_LOOP, str(urls), str(out)]
    m = measure_in_subprocess(cmd, env=_clean_env(), cwd=run_dir, log=run_dir / "contender.log")
    stats = server.stats()
    images = sum(1 for _ in out.glob("*.jpg"))
    run = _run_from(scenario, "sequential", round_, count, images, m, load1)
    run.image_requests, run.repeated_images = stats["image_requests"], stats["repeated_images"]
    run.extra["extrapolated_from"] = count
    if m.returncode != 0:
        run.extra["log_tail"] = _tail(run_dir / "contender.log")
    if psnr_sample:
        sample = [picked[k] for k in _spread(len(picked), psnr_sample)]
        run.psnr_db = sample_psnr(cat, lambda i: out / f"{i}.jpg", psnr_sample, cache_dir, sample)
    return run


# -- quality ----------------------------------------------------------------------------------


def _spread(count: int, n: int) -> list[int]:
    n = min(n, count)
    return sorted({count * k // n for k in range(n)})


def source_images(kind: str, indices: Sequence[int], cache_dir: Path) -> dict[int, bytes]:
    """The served bytes of some images, read from the cache chunk by chunk."""
    found: dict[int, bytes] = {}
    for chunk in sorted({i // CHUNK for i in indices}):
        with np.load(_chunk_path(cache_dir, kind, chunk)) as npz:
            data, offsets = npz["data"], npz["offsets"]
            for i in indices:
                if i // CHUNK == chunk:
                    k = i % CHUNK
                    found[i] = data[offsets[k] : offsets[k + 1]].tobytes()
    return found


def _rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def sample_psnr(
    cat: Catalogue,
    stored: Any,
    n: int,
    cache_dir: Path,
    indices: Sequence[int] | None = None,
) -> float | None:
    """PSNR (dB) of stored images against full decode + one LANCZOS resize of their source.

    The squared error is pooled over the sample (so one identical image does not make it
    infinite); ``inf`` only when every sampled image is pixel-identical to its reference.
    """
    picks = list(indices) if indices is not None else _spread(cat.count, n)
    sources = source_images(cat.kind, picks, cache_dir)
    total, pixels = 0.0, 0
    for i in picks:
        path = stored(i)
        if not path.exists():
            continue
        have = _rgb(path.read_bytes())
        ref = _rgb(sources[i])
        if ref.size != have.size:
            ref = ref.resize(have.size, LANCZOS)
        diff = np.asarray(have, np.float64) - np.asarray(ref, np.float64)
        total += float(np.sum(diff * diff))
        pixels += diff.size
    if not pixels:
        return None
    mse = total / pixels
    return math.inf if mse == 0 else round(10 * math.log10(255**2 / mse), 2)


# -- summaries --------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def medians(runs: Sequence[Run]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scenario (s3: per count) and contender: medians over rounds, and ratios."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        key = run.scenario if run.scenario != "s3" else f"s3@{run.requested}"
        out.setdefault(key, {}).setdefault(run.contender, {"runs": []})["runs"].append(run)
    for group in out.values():
        for name, entry in group.items():
            rs: list[Run] = entry.pop("runs")
            entry.update(
                rounds=len(rs),
                images_per_s=_median([r.images_per_s for r in rs]),
                cpu_ms_per_image=_median([r.cpu_ms_per_image for r in rs]),
                main_peak_mb=_median([r.main_peak_mb for r in rs]),
                tree_peak_mb=_median([r.tree_peak_mb for r in rs]),
                rss_sum_max_mb=_median([r.rss_sum_max_mb for r in rs]),
                wall_s=_median([r.wall_s for r in rs]),
                images=_median([r.images for r in rs]),
                requested=rs[0].requested,
                psnr_db=_median([r.psnr_db for r in rs]),
                load1_max=max(r.load1 for r in rs),
                archive_share=_median([r.extra.get("archive_share") for r in rs]),
                failed=sum(1 for r in rs if r.returncode != 0),
            )
            if name == "asyncds":
                entry["dedup_drops"] = max((r.extra.get("dedup_drops") or 0) for r in rs)
        for entry in group.values():
            for base in ("img2dataset", "sequential"):
                other = group.get(base, {}).get("images_per_s")
                mine = entry["images_per_s"]
                entry[f"vs_{base}"] = round(mine / other, 2) if mine and other else None
    return out


def _fmt(value: Any, spec: str, none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def render_tables(meds: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    head = (
        f"  {'contender':<12}{'img/s':>9}{'vs i2d':>8}{'vs seq':>8}{'CPU ms/img':>11}"
        f"{'main MB':>9}{'tree MB':>9}{'wall s':>8}{'PSNR dB':>9}{'load':>6}{'images':>8}"
    )
    for scenario, group in meds.items():
        lines += ["", f"{scenario}:", head]
        for name in (*CONTENDERS, *sorted(set(group) - set(CONTENDERS))):
            e = group.get(name)
            if e is None:
                continue
            label = name + (" *" if name == "sequential" else "")
            lines.append(
                f"  {label:<12}{_fmt(e['images_per_s'], '.1f'):>9}"
                f"{_fmt(e.get('vs_img2dataset'), '.2f'):>7}x"
                f"{_fmt(e.get('vs_sequential'), '.1f'):>7}x"
                f"{_fmt(e['cpu_ms_per_image'], '.2f'):>11}{_fmt(e['main_peak_mb'], '.0f'):>9}"
                f"{_fmt(e['tree_peak_mb'], '.0f'):>9}{_fmt(e['wall_s'], '.1f'):>8}"
                f"{_fmt(e['psnr_db'], '.2f'):>9}{_fmt(e['load1_max'], '.2f'):>6}"
                f"{_fmt(e['images'], '.0f'):>8}"
            )
    if any("sequential" in g for g in meds.values()):
        lines += ["", "* sequential: measured on a sample of the URLs, images/s extrapolated"]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    met: bool | None  # None: not measured in this run
    detail: str
    aim: bool = False


def gates(meds: dict[str, dict[str, dict[str, Any]]]) -> list[Gate]:
    def get(scenario: str, contender: str, key: str) -> Any:
        return meds.get(scenario, {}).get(contender, {}).get(key)

    out: list[Gate] = []

    def ratio_gate(scenario: str, floor: float, aim: bool = False) -> None:
        ratio = get(scenario, "asyncds", "vs_img2dataset")
        name = f"{scenario}: asyncds >= {floor}x img2dataset images/s"
        if ratio is None:
            out.append(Gate(name, None, "not measured", aim))
        else:
            out.append(Gate(name, ratio >= floor, f"{ratio:.2f}x", aim))

    ratio_gate("s1", 1.5)
    ratio_gate("s1+50ms", 1.5)
    ratio = get("s2", "asyncds", "vs_img2dataset")
    mine, theirs = get("s2", "asyncds", "psnr_db"), get("s2", "img2dataset", "psnr_db")
    name = "s2: asyncds >= 1.5x img2dataset images/s, PSNR >= img2dataset's"
    if ratio is None or mine is None or theirs is None:
        out.append(Gate(name, None, "not measured"))
    else:
        out.append(
            Gate(name, ratio >= 1.5 and mine >= theirs, f"{ratio:.2f}x, {mine} vs {theirs} dB")
        )
    s3 = sorted((int(k.split("@")[1]), g["asyncds"]) for k, g in meds.items() if "@" in k)
    name = "s3: asyncds tree peak <= 150 MB and flat (largest/smallest count <= 1.10)"
    if len(s3) >= 2:
        peak = max(e["tree_peak_mb"] for _, e in s3)
        flat = s3[-1][1]["tree_peak_mb"] / s3[0][1]["tree_peak_mb"]
        detail = (
            f"peak {peak:.0f} MB, {s3[-1][0]} vs {s3[0][0]}: {flat:.2f}x "
            f"(main {s3[-1][1]['main_peak_mb']:.0f} vs {s3[0][1]['main_peak_mb']:.0f} MB)"
        )
        out.append(Gate(name, peak <= 150 and flat <= 1.10, detail))
    else:
        out.append(Gate(name, None, "not measured"))
    share = get("s1", "asyncds", "archive_share")
    name = "s1: archive <= 5 % of asyncds's wall time"
    if share is None:
        have = "s1" in meds and "asyncds" in meds["s1"]
        why = "asyncds.log has no archive time" if have else "not measured"
        out.append(Gate(name, None, why))
    else:
        out.append(Gate(name, share <= 0.05, f"{share * 100:.1f} %"))
    ratio_gate("s1", 2.0, aim=True)
    ratio_gate("s2", 2.0, aim=True)
    cpu = get("s1", "asyncds", "cpu_ms_per_image")
    name = "s1: asyncds <= 1.0 ms CPU per image (whole tree)"
    out.append(
        Gate(name, None, "not measured", True)
        if cpu is None
        else Gate(name, cpu <= 1.0, f"{cpu:.2f} ms", True)
    )
    return out


def render_gates(items: Sequence[Gate]) -> str:
    word = {True: "met", False: "MISSED", None: "n/a"}
    lines = ["", "gates:"]
    lines += [f"  [{word[g.met]:>6}] {g.name}: {g.detail}" for g in items if not g.aim]
    lines += ["aims:"]
    lines += [f"  [{word[g.met]:>6}] {g.name}: {g.detail}" for g in items if g.aim]
    return "\n".join(lines)


def _probe_asyncds(asyncds_python: str) -> dict[str, Any]:
    """Versions seen by ``asyncds_python`` and the folder its asyncds is installed from."""
    probe = (
        "import json, sys, PIL, aiohttp, asyncds, os; from PIL import features; "
        "print(json.dumps({'python': sys.version.split()[0], 'pillow': PIL.__version__, "
        "'libjpeg_turbo': features.version('libjpeg_turbo'), 'aiohttp': aiohttp.__version__, "
        "'asyncds_dir': os.path.dirname(os.path.dirname(asyncds.__file__))}))"
    )
    done = subprocess.run(
        [asyncds_python, "-c", probe], capture_output=True, text=True, cwd="/", check=False
    )
    return json.loads(done.stdout) if done.returncode == 0 else {}


def asyncds_revision(asyncds_dir: str | None) -> str | None:
    """``<short commit>[+dirty]`` of the checkout asyncds runs from (it may change mid-run)."""
    if not asyncds_dir:
        return None
    rev = subprocess.run(
        ["git", "-C", asyncds_dir, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if rev.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", asyncds_dir, "status", "--porcelain", "--", "asyncds"],
        capture_output=True,
        text=True,
    )
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_facts(asyncds_python: str, i2d_version: str | None) -> dict[str, Any]:
    facts = _probe_asyncds(asyncds_python)
    facts["asyncds_commit"] = asyncds_revision(facts.get("asyncds_dir"))
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "harness_python": sys.version.split()[0],
        "asyncds_python": asyncds_python,
        "asyncds": facts,
        "img2dataset": i2d_version,
        "load_average_at_start": os.getloadavg(),
    }


def chart(meds: dict[str, dict[str, dict[str, Any]]], path: Path, title: str) -> bool:
    """Grouped bars: median images/s per contender per scenario (s3 left out)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart", flush=True)
        return False
    groups = [s for s in meds if "@" not in s]
    if not groups:
        return False
    names = [c for c in CONTENDERS if any(c in meds[s] for s in groups)]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for k, name in enumerate(names):
        values = [meds[s].get(name, {}).get("images_per_s") or 0 for s in groups]
        xs = [g + (k - (len(names) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("images/s (median)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def results_document(
    runs: Sequence[Run],
    *,
    machine: dict[str, Any],
    settings: dict[str, Any],
    image_sets: dict[str, Any],
) -> dict[str, Any]:
    meds = medians(runs)
    return {
        "benchmark": "bench_peers",
        "date": dt.date.today().isoformat(),
        "machine": machine,
        "settings": settings,
        "image_sets": image_sets,
        "runs": [asdict(r) for r in runs],
        "medians": meds,
        "gates": [asdict(g) for g in gates(meds)],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# -- the run ----------------------------------------------------------------------------------


def _print_run(run: Run) -> None:
    note = ""
    if run.contender == "asyncds":
        note = f" dedup drops {run.extra.get('dedup_drops')} @{run.extra.get('asyncds_commit')}"
        if run.extra.get("drops"):
            note += f" drops {run.extra['drops']}"
    elif run.contender == "img2dataset":
        note = f" T={run.extra.get('threads')} failed {run.extra.get('failed_to_download')}"
    print(
        f"  {run.scenario:<8} r{run.round} {run.contender:<12} {run.images:>6}/{run.requested:<6}"
        f" {run.wall_s:7.1f} s {run.images_per_s:8.1f} img/s"
        f" CPU {run.cpu_ms_per_image:6.2f} ms/img main {run.main_peak_mb:5.0f} MB"
        f" tree {run.tree_peak_mb:5.0f} MB ({run.processes} procs) load {run.load1:.2f}"
        f" requests {run.image_requests}{note}"
        + (f" settled {run.extra['settle_s']:g} s" if "settle_s" in run.extra else ""),
        flush=True,
    )
    if run.returncode != 0 or run.extra.get("log_tail"):
        print(f"    exit {run.returncode}; log tail:\n{run.extra.get('log_tail', '')}", flush=True)


def _problems(runs: Sequence[Run]) -> list[str]:
    problems = []
    for r in runs:
        what = f"{r.scenario} r{r.round} {r.contender}"
        if r.returncode != 0:
            problems.append(f"{what} exited with {r.returncode}")
        if r.contender == "asyncds" and r.extra.get("dedup_drops") != 0:
            problems.append(
                f"{what}: dedup dropped {r.extra.get('dedup_drops')} images: the neutral server's "
                "images must all be distinct (asyncds's summary.json)"
            )
        if r.images < r.requested:
            problems.append(f"{what}: {r.images} of {r.requested} images on disk")
    return problems


def calibrate(
    work: Path,
    count: int,
    thread_counts: Sequence[int],
    cache_dir: Path,
    rounds: int,
    venv: Path = I2D_VENV,
) -> int:
    """img2dataset images/s on s1 at each thread count (rounds interleave them); the best."""
    print(f"calibrating img2dataset --thread_count on s1, {count} images", flush=True)
    found: dict[int, list[float]] = {t: [] for t in thread_counts}
    with start_server("s1", count, 1, 0, cache_dir, log=work / "server-calibrate.log") as server:
        for r in range(1, rounds + 1):
            for t in thread_counts:
                run = run_img2dataset(
                    server,
                    work,
                    scenario="calibrate",
                    round_=r,
                    threads=t,
                    venv=venv,
                    psnr_sample=0,
                )
                _print_run(run)
                found[t].append(run.images_per_s)
                shutil.rmtree(work / f"calibrate-img2dataset-t{t}-r{r}", ignore_errors=True)
    best = max(thread_counts, key=lambda t: statistics.median(found[t]))
    print(f"\n  {'threads':>8}{'img/s (median)':>16}")
    for t in thread_counts:
        print(f"  {t:>8}{statistics.median(found[t]):>16.1f}{'  <- best' if t == best else ''}")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, smaller sets")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--scenarios", default="s1,s1+50ms,s2,s3")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--threads", type=int, default=BEST_THREADS, help="img2dataset threads")
    parser.add_argument(
        "--calibrate", action="store_true", help="only time img2dataset's thread counts on s1"
    )
    parser.add_argument("--calibrate-threads", default="16,32,64,128,256")
    parser.add_argument("--asyncds-python", default=sys.executable)
    parser.add_argument("--img2dataset-venv", type=Path, default=I2D_VENV)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--no-results", action="store_true", help="write no JSON or chart")
    parser.add_argument("--keep", type=Path, help="keep every run's folder here")
    parser.add_argument("--psnr-sample", type=int, default=100)
    args = parser.parse_args(argv)

    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    table = scenarios(quick)
    wanted = [s.strip().replace(" ", "+") for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in table]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if unknown or set(contenders) - set(CONTENDERS):
        parser.error(f"scenarios are {', '.join(table)}; contenders are {', '.join(CONTENDERS)}")

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    i2d_version = None
    if "img2dataset" in contenders or args.calibrate:
        i2d_version = ensure_img2dataset(args.img2dataset_venv)
    threads = args.threads
    if args.calibrate:
        s1 = table["s1"].counts[0]
        counts = [int(t) for t in args.calibrate_threads.split(",")]
        best = calibrate(work, s1, counts, args.cache_dir, rounds, args.img2dataset_venv)
        print(f"best img2dataset --thread_count here: {best} (pass --threads {best})", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    machine = machine_facts(args.asyncds_python, i2d_version)
    a = machine["asyncds"]
    print(
        f"{machine['cpus']} CPUs, asyncds {a.get('asyncds_commit', '?')} (Python {a.get('python')},"
        f" Pillow {a.get('pillow')}, aiohttp {a.get('aiohttp')}), img2dataset {i2d_version},"
        f" {rounds} round(s){' (quick)' if quick else ''}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runs: list[Run] = []
    image_sets: dict[str, Any] = {}
    for name in wanted:
        sc = table[name]
        who = [c for c in contenders if c in sc.contenders]
        if not who:
            continue
        for count in sc.counts:
            t0 = time.perf_counter()
            made = ensure_images(sc.kind, count, args.cache_dir)
            images = load_images(sc.kind, count, args.cache_dir)
            info = {
                "kind": sc.kind,
                "count": count,
                "mean_kb": round(images.mean_kb, 1),
                "min_phash_distance": min_phash_distance(images.phashes),
                "rerolled": images.rerolled,
                "generated_chunks": made,
                "prepare_s": round(time.perf_counter() - t0, 1),
            }
            del images
            image_sets[f"{name}@{count}"] = info
            print(
                f"\n{name}: {count} {sc.kind} images, {info['mean_kb']} kB mean, min phash"
                f" distance {info['min_phash_distance']} bits, latency {sc.latency_ms:g} ms",
                flush=True,
            )
            classes = classes_for(count)
            log = work / f"server-{name}-{count}.log"
            with start_server(sc.kind, count, classes, sc.latency_ms, args.cache_dir, log) as srv:
                for r in range(1, (rounds if sc.repeat else 1) + 1):
                    shift = (r - 1) % len(who)
                    for contender in who[shift:] + who[:shift]:
                        settled = settle()
                        common = {"scenario": name, "round_": r, "cache_dir": args.cache_dir}
                        psnr = args.psnr_sample
                        if contender == "asyncds":
                            run = run_asyncds(
                                srv, work, python=args.asyncds_python, psnr_sample=psnr, **common
                            )
                        elif contender == "img2dataset":
                            run = run_img2dataset(
                                srv,
                                work,
                                threads=threads,
                                venv=args.img2dataset_venv,
                                psnr_sample=psnr,
                                **common,
                            )
                        else:
                            run = run_sequential(
                                srv, work, count=sc.sequential_count, psnr_sample=psnr, **common
                            )
                        run.extra.update(settled)
                        runs.append(run)
                        _print_run(run)

    # Run folders stay until the end (below): deleting a run's 20,000 files between runs made
    # the next contender's file creations slower (ext4 skips inodes freed in the last
    # minutes, `recently_deleted`: benchmarks/README.md).
    meds = medians(runs)
    print(render_tables(meds))
    print(render_gates(gates(meds)))
    if quick:
        print(
            "quick: small sets flatter asyncds (img2dataset spends 10-15 s starting and ending, "
            "which 3,000 images do not amortise); judge the gates on a full run"
        )
    problems = _problems(runs)
    total = time.perf_counter() - started
    print(f"\ntotal {total / 60:.1f} min" + (f"; run folders in {work}" if args.keep else ""))
    if not args.no_results:
        settings = {
            "quick": quick,
            "rounds": rounds,
            "scenarios": {n: asdict(table[n]) for n in wanted},
            "contenders": contenders,
            "img2dataset_threads": threads,
            "class_size": CLASS_SIZE,
            "calls_per_hour": CALLS_PER_HOUR,
            "psnr_sample": args.psnr_sample,
            "total_s": round(total, 1),
        }
        doc = results_document(runs, machine=machine, settings=settings, image_sets=image_sets)
        partial = set(wanted) != set(table) or set(contenders) != set(CONTENDERS)
        stem = dt.date.today().isoformat() + ("-quick" if quick else "")
        stem += "-partial" if partial else ""
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path = args.results_dir / f"{stem}.json"
        path.write_text(json.dumps(_json_safe(doc), indent=1) + "\n")
        title = (
            f"{stem}: median images/s, {machine['cpus']} CPUs, asyncds vs img2dataset {threads}T"
        )
        drawn = chart(meds, args.results_dir / f"{stem}.png", title)
        print(f"results: {path}" + (f", chart: {path.with_suffix('.png')}" if drawn else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
