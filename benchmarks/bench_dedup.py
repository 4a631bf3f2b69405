"""Dedup planning: time and memory of ``dedup.plan_dedup`` against a brute-force baseline.

The baseline, measured in the same run, is the obvious way: compare each image with every image
kept so far (sha256 equality, Hamming distance of the perceptual hashes). It is quadratic, so it
runs on the smallest size only, and the plan must agree with it there. Then the plan runs at
growing sizes, to show that its time grows about linearly and its Python memory not at all (what
it has seen lives in a scratch SQLite file, ``dedup.SeenIndex``), in both of its ways:

- one pass (``plan_dedup`` of an iterator): every row goes through the index;
- two passes (``plan_dedup`` of rows it can read twice, as a job's state stream): a first pass
  finds the rows sharing a photo id, bytes or a near hash with another
  (``dedup.copy_suspects``: compact arrays, sorted), and only those go through the index.

    python -m benchmarks.bench_dedup [--sizes 3000 30000 100000]

About 30 s on 2 CPUs.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

from asyncds.dedup import Decision, plan_dedup
from asyncds.state import CandidateRow, Status

DISTANCE = 4


def rows(n: int, seed: int = 1) -> list[CandidateRow]:
    """``n`` good images of one class: 2 % exact copies, 3 % near copies of earlier ones."""
    rng = random.Random(seed)
    out: list[CandidateRow] = []
    for i in range(1, n + 1):
        roll = rng.random()
        if out and roll < 0.02:
            twin = rng.choice(out)
            sha, phash = twin.sha256, int(twin.phash, 16)
        elif out and roll < 0.05:
            twin = rng.choice(out)
            sha = f"{rng.getrandbits(256):064x}"
            phash = int(twin.phash, 16)
            for bit in rng.sample(range(64), rng.randint(1, DISTANCE)):
                phash ^= 1 << bit
        else:
            sha, phash = f"{rng.getrandbits(256):064x}", rng.getrandbits(64)
        out.append(
            CandidateRow(
                "cat", str(i), i, "u", 240, 180, "o", "n", "t", 4, 0,
                status=Status.OK, sha256=sha, phash=f"{phash:016x}", path=f"cat/{i}.jpg",
            )
        )  # fmt: skip
    return out


def brute_force(given: list[CandidateRow]) -> set[str]:
    """Photo ids a pairwise comparison with every kept image drops."""
    kept: list[tuple[str, int]] = []
    dropped: set[str] = set()
    for row in given:
        h = int(row.phash, 16)
        if any(s == row.sha256 or (k ^ h).bit_count() <= DISTANCE for s, k in kept):
            dropped.add(row.photo_id)
        else:
            kept.append((row.sha256, h))
    return dropped


def plan(given: list[CandidateRow], *, two_passes: bool = True) -> list[Decision]:
    # As a job plans: rows stream in by search rank (``ranked``), nothing is sorted in memory;
    # a job's stream can be read twice (the list here), an iterator only once.
    return plan_dedup(
        given if two_passes else iter(given),
        class_order=["cat"],
        max_distance=DISTANCE,
        cross_class="drop",
        ranked=True,
    )


def _timed(given: list[CandidateRow], *, two_passes: bool) -> tuple[list[Decision], float, float]:
    """The plan, its seconds, and its Python peak in MB (a second run, under tracemalloc)."""
    started = time.perf_counter()
    decisions = plan(given, two_passes=two_passes)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    plan(given, two_passes=two_passes)
    peak = (tracemalloc.get_traced_memory()[1] - base) / 1e6
    tracemalloc.stop()
    return decisions, seconds, peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000, 100000])
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)

    small = rows(sizes[0])
    started = time.perf_counter()
    expected = brute_force(small)
    baseline_s = time.perf_counter() - started
    for two_passes in (False, True):
        if {d.photo_id for d in plan(small, two_passes=two_passes)} != expected:
            raise SystemExit("plan_dedup and the brute force disagree")
    print(
        f"baseline: brute force over {sizes[0]} images, {baseline_s:.2f} s, {len(expected)} drops"
    )
    print(
        f"{'images':>8}  {'one pass s':>10}  {'two passes s':>12}  {'vs baseline':>11}  "
        f"{'drops':>6}  {'peak MB (one/two)':>17}"
    )
    for n in sizes:
        given = rows(n)
        one, one_s, one_mb = _timed(given, two_passes=False)
        two, two_s, two_mb = _timed(given, two_passes=True)
        if one != two:
            raise SystemExit(f"one and two passes disagree at {n} images")
        ratio = f"{baseline_s / two_s:>10.1f}x" if n == sizes[0] else f"{'-':>11}"
        print(
            f"{n:>8}  {one_s:>10.2f}  {two_s:>12.2f}  {ratio}  {len(two):>6}  "
            f"{one_mb:>8.2f} / {two_mb:<6.2f}"
        )
    print("(Python peak: what planning allocates beyond its input rows, tracemalloc)")


if __name__ == "__main__":
    main()
