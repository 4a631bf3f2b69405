"""Throughput of the whole pipeline against the emulator, versus the original's sequential way.

Baseline (measured in the same run): the original scripts' shape — search, then download each
URL one after another and resize it in-process. asyncds: `job.create_dataset` (bounded queue,
concurrent downloads, process pool). Both fetch the same class from the same emulator with
`image_latency_s` set, as a real CDN has latency.

    python -m benchmarks.bench_pipeline [--count 400] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import aiohttp

from asyncds.config import ClassSpec, Config, SplitSpec
from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, FaultProfile, running_emulator
from asyncds.flickr import FlickrClient, collect_candidates
from asyncds.imaging import ImageOptions, process_image
from asyncds.job import create_dataset


async def sequential(config: Config, out: Path) -> float:
    spec = config.classes[0]
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        client = FlickrClient(
            session,
            api_url=config.flickr.api_url,
            api_key=EMULATOR_API_KEY,
            calls_per_hour=config.flickr.calls_per_hour,
            retry=config.flickr.retry_policy,
        )
        found = await collect_candidates(
            client, spec, config.flickr, max_side=240, limit=spec.count
        )
        folder = out / spec.name
        folder.mkdir(parents=True)
        for c in found:
            async with session.get(c.url) as resp:
                data = await resp.read()
            result = process_image(data, ImageOptions())
            if result.data:
                (folder / f"{c.photo_id}.jpg").write_bytes(result.data)  # noqa: ASYNC230
    return time.perf_counter() - started


async def pipelined(config: Config, out: Path) -> float:
    started = time.perf_counter()
    await create_dataset(config, api_key=EMULATOR_API_KEY, out_dir=out, quiet=True)
    return time.perf_counter() - started


async def main(count: int, latency: float) -> None:
    faults = FaultProfile.from_mapping({"image_latency_s": latency})
    async with running_emulator(EmulatorSettings(seed=1, faults=faults)) as emu:
        base = Config(
            classes=(ClassSpec(name="cat", count=count, tags=("cat",)),),
            split=SplitSpec(type="proportional", test_size=10),
        )
        config = dataclasses.replace(
            base,
            flickr=dataclasses.replace(base.flickr, api_url=emu.api_url, calls_per_hour=360000),
        )
        with tempfile.TemporaryDirectory() as tmp:
            seq = await sequential(config, Path(tmp) / "seq")
            par = await pipelined(config, Path(tmp) / "par")
    print(f"{count} images, image latency {latency * 1000:.0f} ms, 2 cores")
    print(f"{'path':<44}{'seconds':>9}{'img/s':>9}{'vs baseline':>13}")
    print(f"{'baseline: sequential download + resize':<44}{seq:9.2f}{count / seq:9.1f}{1:12.2f}x")
    print(
        f"{'asyncds pipeline (dedup, split, archive too)':<44}{par:9.2f}{count / par:9.1f}"
        f"{seq / par:12.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.count, args.latency))
