"""asyncds.pool: the imaging processes, their batches, and how they fail and end."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from asyncds.imaging import ImageOptions, stored_phash
from asyncds.pool import ImagePool, WorkerDied
from asyncds.worker import MISSING, ImageJob

OPTIONS = ImageOptions()


def jpeg(seed: int, size: tuple[int, int] = (240, 180)) -> bytes:
    im = Image.effect_mandelbrot(size, (-2 + seed / 50, -1.2, 1, 1.2), 40).convert("RGB")
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


async def test_jobs_come_back_in_order_batched_and_written(tmp_path: Path):
    sources = [jpeg(i) for i in range(40)]
    async with ImagePool(2) as pool:
        jobs = [ImageJob(str(tmp_path / f"{i}.jpg"), data) for i, data in enumerate(sources)]
        results = await asyncio.gather(*(pool.run("image", job, OPTIONS) for job in jobs))
        assert pool.requests < len(jobs)  # they waited together and left together
    for i, (data, result) in enumerate(zip(sources, results, strict=True)):
        assert result.ok and result.passthrough and result.data is None  # bytes stay there
        assert (tmp_path / f"{i}.jpg").read_bytes() == data
        assert result.phash == stored_phash(data)


async def test_adoption_finds_a_stored_file_and_reports_a_missing_one(tmp_path: Path):
    (tmp_path / "1.jpg").write_bytes(jpeg(1))
    async with ImagePool(1) as pool:
        found = await pool.run("image", ImageJob(str(tmp_path / "1.jpg")), OPTIONS)
        missing = await pool.run("image", ImageJob(str(tmp_path / "2.jpg")), OPTIONS)
        (tmp_path / "3.jpg").write_bytes(b"not an image")
        unusable = await pool.run("image", ImageJob(str(tmp_path / "3.jpg")), OPTIONS)
    assert found.ok and missing.status == MISSING and unusable.status == MISSING
    assert not (tmp_path / "3.jpg").exists()  # not ours: removed, to be downloaded


async def test_a_failed_write_fails_its_jobs_and_the_pool_goes_on(tmp_path: Path):
    async with ImagePool(1) as pool:
        with pytest.raises(FileNotFoundError):
            await pool.run("image", ImageJob(str(tmp_path / "no" / "1.jpg"), jpeg(1)), OPTIONS)
        ok = await pool.run("image", ImageJob(str(tmp_path / "1.jpg"), jpeg(1)), OPTIONS)
        assert ok.ok


async def test_a_killed_worker_fails_waiting_and_later_jobs_at_once(tmp_path: Path):
    async with ImagePool(1) as pool:
        (pid,) = pool.pids
        big = [jpeg(i, (2000, 1500)) for i in range(8)]
        waiting = [
            asyncio.ensure_future(
                pool.run("image", ImageJob(str(tmp_path / f"{i}.jpg"), d), OPTIONS)
            )
            for i, d in enumerate(big)
        ]
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        done = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 10)
        assert any(isinstance(r, WorkerDied) for r in done)
        died = next(r for r in done if isinstance(r, WorkerDied))
        assert f"pid {pid}" in str(died) and "signal 9" in str(died) and "memory" in str(died)
        with pytest.raises(WorkerDied):
            await pool.run("image", ImageJob(str(tmp_path / "x.jpg"), jpeg(1)), OPTIONS)


async def test_workers_end_with_the_pool_and_when_their_socket_closes():
    pool = ImagePool(2)
    await pool.start()
    pids = pool.pids
    assert all(alive(pid) for pid in pids)
    await pool.close()
    assert not any(alive(pid) for pid in pids)

    # A run that dies without closing anything: the kernel closes its sockets.
    pool = ImagePool(1)
    await pool.start()
    (pid,) = pool.pids
    for w in pool._workers:
        w.writer.transport.abort()  # what the kernel does to a SIGKILLed run's sockets
    await asyncio.wait_for(pool._workers[0].process.wait(), 10)
    assert not alive(pid)
    await pool.close()


async def test_rehash_maps_paths_to_hashes(tmp_path: Path):
    data = jpeg(3)
    (tmp_path / "a.jpg").write_bytes(data)
    async with ImagePool(2) as pool:
        hashes = await pool.map("rehash", [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    assert hashes == [stored_phash(data), None]
