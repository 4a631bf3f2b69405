"""Peak memory of a whole run against the emulator, at a small and at large requested counts.

The design's promise is that memory does not grow with the requested count. Each count runs the
real CLI (``python -m asyncds``) in its own process against one in-process emulator, and the
peak resident set size (``VmHWM``) of the main process and of the largest pool worker is read
while it runs. The baseline is the smallest count, measured in the same run; the ratio column
is what the promise is about.

    python -m benchmarks.bench_memory [--counts 2000 20000] [--out DIR]

About 1 minute for the default counts on 2 CPUs; ``--counts 2000 50000`` takes about 2.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, EmulatorThread

# Runs the CLI and, when it returns, writes its own peak RSS where the benchmark reads it:
# /proc is gone once the process exits, and sampling could miss the last half second. VmHWM,
# not ru_maxrss: Linux carries ru_maxrss over exec from the forked copy of the parent, so a
# big parent (this one, serving images) would show up as the child's peak.
RUNNER = """
import json, sys
from asyncds.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as f:
    peak_kib = int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "peak_kib": peak_kib}, f)
sys.exit(code)
"""


@dataclass(frozen=True, slots=True)
class Measured:
    count: int
    seconds: float
    main_mb: float
    worker_mb: float
    images: int


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def _largest_worker(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Sample the pool workers' high-water marks (monotonic, so sampling loses little)."""
    while not stop.wait(0.2):
        for kid in _children(pid):
            peak[0] = max(peak[0], _status_kib(kid, "VmHWM"))


def run_once(api_url: str, count: int, work: Path) -> Measured:
    out = work / f"out-{count}"
    config = work / f"config-{count}.yaml"
    config.write_text(
        "classes:\n"
        f"  - {{name: cat, count: {count}}}\n"
        "train_test_split: {seed: 42, type: proportional, test_size: 10}\n"
        # The emulator has no rate limit to respect; 3,600 calls/hour would make this an hour.
        "flickr: {calls_per_hour: 360000}\n"
    )
    report = work / f"peak-{count}.json"
    env = {**os.environ, "FLICKR_API_URL": api_url, "API_KEY": EMULATOR_API_KEY}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(report), str(config), "--output-dir", str(out), "-q"],
        env=env,
    )
    stop, worker = threading.Event(), [0]
    sampler = threading.Thread(target=_largest_worker, args=(proc.pid, stop, worker))
    sampler.start()
    code = proc.wait()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the run for {count} images failed with exit code {code}")
    peak = json.loads(report.read_text())
    images = sum(1 for _ in (out / "cat").glob("*.jpg"))
    return Measured(count, seconds, peak["peak_kib"] / 1024, worker[0] / 1024, images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--out", type=Path, help="keep the outputs here (default: a temp dir)")
    args = parser.parse_args(argv)
    counts = sorted(args.counts)
    # Enough photos that failures are replaced; no faults: this measures memory, not recovery.
    settings = EmulatorSettings(tag_sizes={"cat": int(counts[-1] * 1.2) + 1000})
    with tempfile.TemporaryDirectory() as tmp, EmulatorThread(settings) as emu:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [run_once(emu.api_url, count, work) for count in counts]
    base = rows[0]
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; baseline: {base.count} images")
    print(
        f"{'images':>8}  {'seconds':>8}  {'main peak MB':>12}  {'vs baseline':>11}"
        f"  {'largest worker MB':>17}  {'vs baseline':>11}"
    )
    for r in rows:
        main_ratio, worker_ratio = r.main_mb / base.main_mb, r.worker_mb / base.worker_mb
        print(
            f"{r.images:>8}  {r.seconds:>8.1f}  {r.main_mb:>12.1f}  {main_ratio:>10.2f}x"
            f"  {r.worker_mb:>17.1f}  {worker_ratio:>10.2f}x"
        )


if __name__ == "__main__":
    main()
