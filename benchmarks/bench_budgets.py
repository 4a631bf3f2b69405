"""Speed budgets the test suite used to assert, timed here instead.

A test must not fail because the machine is busy, so the tests keep only what each operation
does (how many attempts, which status, nothing decoded) and this module times it against the
budget the test once asserted. It prints one row per operation and always exits 0: a row over
its budget is a finding to look into, on a quiet machine, not a broken build.

    python -m benchmarks.bench_budgets [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from asyncds.emulator import EMULATOR_API_KEY, Catalog, EmulatorSettings, running_emulator
from asyncds.emulator.catalog import SearchQuery
from asyncds.emulator.faults import FaultProfile
from asyncds.emulator.server import RunningEmulator
from asyncds.fetch import FetchStatus, fetch_image
from asyncds.flickr import FlickrClient
from asyncds.imaging import TOO_MANY_PIXELS, ImageOptions, process_image
from asyncds.retry import RetryPolicy

FAST = RetryPolicy(retries=5, backoff_s=0.001, max_backoff_s=0.01)
STALL_S = 0.4  # test_emulator.py::test_stall_is_bounded
LONG_STALL_S = 30.0  # longer than any budget: a client that waits it out is obviously over
CUT_TIMEOUT_S = 0.15  # test_fetch.py's STALL_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Budget:
    what: str
    test: str  # where the assertion used to be
    budget_s: float
    unit: str = "s"  # "s" for the whole operation, "s/item" for a per-item mean


@dataclass(frozen=True, slots=True)
class Row:
    budget: Budget
    best_s: float


Timed = Callable[[int], Awaitable[float]]  # round number -> seconds (the budget's unit)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width``x``height`` with one row of pixels (as in test_imaging.py)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- the timed operations ---------------------------------------------------------------------


async def catalog_build(_: int) -> float:
    started = time.perf_counter()
    ids = Catalog(seed=11, default_tag_size=50_000).tag_ids("sky")
    took = time.perf_counter() - started
    assert len(ids) == 50_000
    return took


async def windowed_searches(_: int) -> float:
    catalog = Catalog(seed=11, tag_sizes={"sea": 20_000})  # fresh: no cached results
    catalog.tag_ids("sea")
    started = time.perf_counter()
    for i in range(50):
        lo = 1_200_000_000 + i * 9_000_000
        catalog.search(SearchQuery(tags=("sea",), min_upload=lo, max_upload=lo + 40_000_000))
    return time.perf_counter() - started


async def pixel_bomb(_: int) -> float:
    data = png_header_only(10_000, 10_000)
    started = time.perf_counter()
    result = process_image(data, ImageOptions(max_pixels=1_000_000))
    took = time.perf_counter() - started
    assert result.status == TOO_MANY_PIXELS, result.reason
    return took


class EmulatorCases:
    """The cases that need a running emulator (one per fault setting), and a session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        plain: RunningEmulator,
        stalling: RunningEmulator,
        long_stalling: RunningEmulator,
    ) -> None:
        self.session = session
        self.plain = plain
        # Every image stalls on its first two attempts: for STALL_S, or for LONG_STALL_S.
        self.stalling = stalling
        self.long_stalling = long_stalling
        self.cat = [int(i) for i in plain.catalog.tag_ids("cat")]

    def photos(self, round_no: int, case: int, count: int = 1) -> list[int]:
        """Photos no other round or case has asked for (their renders are not cached)."""
        start = (round_no * 8 + case) * 40
        return self.cat[start : start + count]

    async def _get(self, url: str) -> int:
        async with self.session.get(url) as resp:
            await resp.read()
            return resp.status

    async def images_240(self, round_no: int) -> float:
        urls = [self.plain.image_url(pid, "m") for pid in self.photos(round_no, 0, 40)]
        started = time.perf_counter()
        for url in urls:
            assert await self._get(url) == 200
        return (time.perf_counter() - started) / len(urls)

    def _stalled_url(self, round_no: int, case: int, emu: RunningEmulator) -> str:
        return emu.image_url(self.photos(round_no, case)[0], "t")

    async def stall_finishes(self, round_no: int) -> float:
        url = self._stalled_url(round_no, 1, self.stalling)
        timeout = aiohttp.ClientTimeout(sock_read=0.1)
        try:  # the first attempt stalls too: give up on it at once, as the test does
            async with self.session.get(url, timeout=timeout) as resp:
                await resp.read()
        except TimeoutError:
            pass
        started = time.perf_counter()
        assert await self._get(url) == 200
        return time.perf_counter() - started

    async def cleared_third_attempt(self, round_no: int) -> float:
        url = self._stalled_url(round_no, 2, self.stalling)
        timeout = aiohttp.ClientTimeout(sock_read=0.05)
        for _ in range(2):
            try:
                async with self.session.get(url, timeout=timeout) as resp:
                    await resp.read()
            except TimeoutError:
                pass
        started = time.perf_counter()
        assert await self._get(url) == 200
        return time.perf_counter() - started

    async def fetch_stall_cut(self, round_no: int) -> float:
        url = self._stalled_url(round_no, 3, self.long_stalling)
        started = time.perf_counter()
        result = await fetch_image(
            self.session, url, max_bytes=20_000_000, timeout_s=CUT_TIMEOUT_S, retry=FAST
        )
        took = time.perf_counter() - started
        assert result.status == FetchStatus.OK and result.attempts == 3, result
        return took

    async def fetch_declared_too_large(self, round_no: int) -> float:
        # The image stalls half way for LONG_STALL_S: reading it would blow any budget.
        url = self._stalled_url(round_no, 4, self.long_stalling)
        started = time.perf_counter()
        result = await fetch_image(self.session, url, max_bytes=100, timeout_s=10, retry=FAST)
        took = time.perf_counter() - started
        assert result.status == FetchStatus.TOO_LARGE and "Content-Length" in result.reason
        return took

    async def paced_calls(self, _: int) -> float:
        client = FlickrClient(
            self.session,
            api_url=self.plain.api_url,
            api_key=EMULATOR_API_KEY,
            calls_per_hour=36_000,
            retry=FAST,
        )
        started = time.perf_counter()
        await asyncio.gather(*(client.call("flickr.test.echo") for _ in range(20)))
        took = time.perf_counter() - started
        assert client.calls == 20
        return took


# --- running ------------------------------------------------------------------------------------


async def best_of(rounds: int, timed: Timed) -> float:
    return min([await timed(r) for r in range(rounds)])


async def main(rounds: int) -> list[Row]:
    rows: list[Row] = []

    async def measure(budget: Budget, timed: Timed) -> None:
        rows.append(Row(budget, await best_of(rounds, timed)))

    await measure(
        Budget(
            "catalog: build a 50,000-photo tag",
            "test_emulator.py::test_big_catalogs_build_windowed_searches_and_dates_are_clustered",
            0.5,
        ),
        catalog_build,
    )
    await measure(
        Budget(
            "catalog: 50 date-window searches of a 20,000-photo tag",
            "test_emulator.py::test_big_catalogs_build_windowed_searches_and_dates_are_clustered",
            0.5,
        ),
        windowed_searches,
    )
    await measure(
        Budget(
            "imaging: refuse a 10000x10000 PNG from its header",
            "test_imaging.py::test_pixel_bomb_is_refused_from_the_header",
            0.5,
        ),
        pixel_bomb,
    )

    # Three emulators with one catalog; enough photos for EmulatorCases.photos() in every round.
    size = 8 * 40 * (rounds + 1)
    stall = FaultProfile(image_stall=1.0, stall_s=STALL_S)
    long_stall = FaultProfile(image_stall=1.0, stall_s=LONG_STALL_S)
    async with (
        aiohttp.ClientSession() as session,
        running_emulator(EmulatorSettings(seed=7, default_tag_size=size)) as plain,
        running_emulator(EmulatorSettings(seed=7, default_tag_size=size, faults=stall)) as stalls,
        running_emulator(
            EmulatorSettings(seed=7, default_tag_size=size, faults=long_stall)
        ) as long_stalls,
    ):
        cases = EmulatorCases(session, plain, stalls, long_stalls)
        await measure(
            Budget(
                "emulator CDN: a 240-px image, 40 in a row",
                "test_emulator.py::test_url_sizes_absent_when_missing_and_served_at_their_size",
                0.05,
                "s/item",
            ),
            cases.images_240,
        )
        await measure(
            Budget(
                f"emulator CDN: an image stalled {STALL_S:g} s, to its end",
                "test_emulator.py::test_stall_is_bounded",
                2.0,
            ),
            cases.stall_finishes,
        )
        await measure(
            Budget(
                "emulator CDN: the same image on its third (clean) attempt",
                "test_emulator.py::test_stall_is_bounded",
                0.3,
            ),
            cases.cleared_third_attempt,
        )
        await measure(
            Budget(
                f"fetch: two {LONG_STALL_S:g}-s stalls cut at {CUT_TIMEOUT_S:g} s, third try ok",
                "test_fetch.py::test_stall_is_cut_and_retried",
                2.0,
            ),
            cases.fetch_stall_cut,
        )
        await measure(
            Budget(
                "fetch: Content-Length over max_bytes, body stalled, refused",
                "test_fetch.py::test_oversize_by_content_length_is_rejected_before_reading",
                1.0,
            ),
            cases.fetch_declared_too_large,
        )
        await measure(
            Budget(
                "flickr: 20 concurrent calls at 36,000/h (burst 10, ideal 1.02 s)",
                "test_flickr.py::test_one_limiter_paces_every_attempt_of_concurrent_callers",
                3.0,
            ),
            cases.paced_calls,
        )
    return rows


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def report(rows: list[Row], rounds: int, load: float) -> None:
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} before the run; best of {rounds} rounds")
    tests = list(dict.fromkeys(row.budget.test for row in rows))
    print(f"{'operation':<68}{'measured':>13}{'budget':>13}  verdict")
    for row in rows:
        b = row.budget
        unit = "ms/img" if b.unit == "s/item" else "ms"
        verdict = "within" if row.best_s <= b.budget_s else "OVER budget"
        measured, budget = f"{row.best_s * 1000:.2f} {unit}", f"{b.budget_s * 1000:g} {unit}"
        note = f"[{tests.index(b.test) + 1}]"
        print(f"{b.what + ' ' + note:<68}{measured:>13}{budget:>13}  {verdict}")
    print("budgets as the tests asserted them, before they moved here:")
    for number, test in enumerate(tests, 1):
        print(f"  [{number}] tests/{test}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = load_average()
    results = asyncio.run(main(args.rounds))
    report(results, args.rounds, load_before)
