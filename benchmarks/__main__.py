"""Run every benchmark: `python -m benchmarks` (or `make bench`)."""

import subprocess
import sys

BENCHMARKS = (
    "benchmarks.bench_imaging",
    "benchmarks.bench_pipeline",
    "benchmarks.bench_dedup",
    "benchmarks.bench_phash",
    "benchmarks.bench_memory",
    "benchmarks.bench_peers",
    "benchmarks.bench_budgets",
)

for name in BENCHMARKS:
    print(f"== {name}", flush=True)
    subprocess.run([sys.executable, "-m", name], check=True)
