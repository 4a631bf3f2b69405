"""Run every benchmark: `python -m benchmarks` (or `make bench`)."""

import subprocess
import sys

for name in ("benchmarks.bench_imaging", "benchmarks.bench_pipeline"):
    print(f"== {name}", flush=True)
    subprocess.run([sys.executable, "-m", name], check=True)
