"""Decode/resize/encode paths for ``asyncds.imaging``, timed and compared on real photographs.

Run from the repository root: ``python -m benchmarks.bench_imaging`` (about 10 s).

Inputs are rendered from ``asyncds/emulator/photos`` so that every pixel carries real detail:
1024x768 mosaics of four native-resolution 512x384 crops, 500x375 native crops, and 240-px
baseline JPEGs (what Flickr's ``url_s`` serves). Each path is timed per image (best of several
interleaved rounds, so a busy machine slows all paths alike) and its 240-px output is compared
with a high-quality reference: full decode + LANCZOS. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import imagehash
import numpy as np
import PIL
from PIL import Image, features

from asyncds.imaging import ImageOptions, process_batch, process_image, stored_phash
from asyncds.pool import ImagePool
from asyncds.worker import ImageJob

PHOTOS = Path(__file__).resolve().parent.parent / "asyncds" / "emulator" / "photos"
MAX_SIDE = 240
QUALITY = 90
ROUNDS = 11
POOL_IMAGES = 200
POOL_BATCH = 16
POOL_ROUNDS = 5
LANCZOS = Image.Resampling.LANCZOS
REFERENCE = "ref: full decode + LANCZOS"

# A path turns source bytes into (stored JPEG bytes, the 240-px pixels that were encoded, or
# None when the path does not expose them).
PathFn = Callable[[bytes], tuple[bytes, Image.Image | None]]


@dataclass(frozen=True, slots=True)
class Row:
    group: str
    path: str
    ms: float
    ratio: float
    resize_psnr: float
    stored_psnr: float
    stored_kb: float


def fit_to(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``size`` scaled so that its longest side is ``side``."""
    scale = side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def fit(width: int, height: int) -> tuple[int, int]:
    """Same rule as ``imaging._fit``: longest side MAX_SIDE, never upscale."""
    return fit_to((width, height), min(MAX_SIDE, max(width, height)))


def encode(im: Image.Image, quality: int = QUALITY, *, optimize: bool = False) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, optimize=optimize)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.convert("RGB")


# --- inputs ---------------------------------------------------------------------------------


def load_photos() -> dict[str, Image.Image]:
    return {p.stem: decode(p.read_bytes()) for p in sorted(PHOTOS.glob("*.jpg"))}


def mosaics(photos: dict[str, Image.Image], count: int) -> list[bytes]:
    """1024x768 JPEGs made of four native-resolution crops: camera-like detail at 1024 px."""
    big = [name for name, im in photos.items() if im.width >= 512 and im.height >= 384]
    out = []
    for k in range(count):
        canvas = Image.new("RGB", (1024, 768))
        for j in range(4):
            im = photos[big[(k + j) % len(big)]]
            x, y = (k * 37) % (im.width - 511), (k * 23) % (im.height - 383)
            canvas.paste(im.crop((x, y, x + 512, y + 384)), ((j % 2) * 512, (j // 2) * 384))
        out.append(encode(canvas, quality=92))
    return out


def crops_500(photos: dict[str, Image.Image]) -> list[bytes]:
    out = []
    for im in photos.values():
        if im.width >= 500 and im.height >= 375:
            out.append(encode(im.crop((0, 0, 500, 375)), quality=92))
        else:
            out.append(encode(im.resize(fit_to(im.size, 500), LANCZOS), quality=92))
    return out


def small_jpegs(photos: dict[str, Image.Image], count: int) -> list[bytes]:
    """``count`` distinct 240-px baseline JPEGs: shifted crops of the photos, downscaled."""
    images = list(photos.values())
    out = []
    for k in range(count):
        im = images[k % len(images)]
        dx, dy = (k * 7) % (im.width // 4), (k * 5) % (im.height // 4)
        crop = im.crop((dx, dy, dx + im.width * 3 // 4, dy + im.height * 3 // 4))
        out.append(encode(crop.resize(fit(*crop.size), LANCZOS)))
    return out


# --- candidate paths ------------------------------------------------------------------------


def path_thumbnail(data: bytes) -> tuple[bytes, Image.Image | None]:
    """(a) the usual Pillow recipe: full decode, ``thumbnail`` with its defaults, encode."""
    im = Image.open(io.BytesIO(data))
    im.load()  # full decode first: thumbnail would otherwise draft on its own
    im.thumbnail((MAX_SIDE, MAX_SIDE))
    return encode(im), im


def draft_lanczos(
    headroom: int, *, optimize: bool = False, method: Image.Resampling = LANCZOS
) -> PathFn:
    """(b) DCT-scaled decode to >= ``headroom`` x the target, then ``method`` (LANCZOS unless
    said otherwise) with the draft box."""

    def run(data: bytes) -> tuple[bytes, Image.Image | None]:
        im = Image.open(io.BytesIO(data))
        target = fit(*im.size)
        drafted = im.draft("RGB", (target[0] * headroom, target[1] * headroom))
        small = im.resize(target, method, box=drafted[1] if drafted else None)
        return encode(small, optimize=optimize), small

    return run


def path_thumbnail_lanczos(data: bytes) -> tuple[bytes, Image.Image | None]:
    """(b) Pillow's own draft + reducing_gap: ``thumbnail(LANCZOS, reducing_gap=2.0)``."""
    im = Image.open(io.BytesIO(data))
    im.thumbnail((MAX_SIDE, MAX_SIDE), LANCZOS, reducing_gap=2.0)
    return encode(im), im


def path_full_lanczos(data: bytes) -> tuple[bytes, Image.Image]:
    """The quality reference: every source pixel decoded, one LANCZOS pass."""
    im = Image.open(io.BytesIO(data))
    im.load()
    small = im.resize(fit(*im.size), LANCZOS) if max(im.size) > MAX_SIDE else im
    return encode(small), small


def path_passthrough(data: bytes) -> tuple[bytes, Image.Image | None]:
    """(c) keep the bytes: full decode to verify, then sha256 and imagehash's phash (hash v1)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    hashlib.sha256(data).hexdigest()
    imagehash.phash(im)
    return data, im


def path_passthrough_reduced(data: bytes) -> tuple[bytes, Image.Image | None]:
    """(c2) keep the bytes: one reduced decode verifies and feeds the phash (hash v2, kept)."""
    hashlib.sha256(data).hexdigest()
    stored_phash(data)
    return data, None


def path_thumbnail_hashed(data: bytes) -> tuple[bytes, Image.Image | None]:
    """(a) plus the sha256 and phash every stored image needs: a fair match for (c)."""
    stored, pixels = path_thumbnail(data)
    hashlib.sha256(stored).hexdigest()
    imagehash.phash(decode(stored))
    return stored, pixels


def path_process_image(data: bytes) -> tuple[bytes, Image.Image | None]:
    """What the pipeline runs: the kept path plus optimize, sha256, phash of the stored file."""
    result = process_image(data, ImageOptions(max_side=MAX_SIDE, quality=QUALITY))
    assert result.data is not None, result.reason
    return result.data, None


# --- measuring ------------------------------------------------------------------------------


def psnr(a: Image.Image, b: Image.Image) -> float:
    if a.size != b.size:  # thumbnail rounds the short side its own way; compare like with like
        a = a.resize(b.size, LANCZOS)
    diff = np.asarray(a.convert("RGB"), np.float64) - np.asarray(b.convert("RGB"), np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def time_paths(paths: dict[str, PathFn], inputs: Sequence[bytes]) -> dict[str, float]:
    """Best per-image seconds of each path; rounds interleave paths so drift hits all alike."""
    best = dict.fromkeys(paths, math.inf)
    for _ in range(ROUNDS):
        for name, fn in paths.items():
            start = time.perf_counter()
            for data in inputs:
                fn(data)
            best[name] = min(best[name], (time.perf_counter() - start) / len(inputs))
    return best


def bench_group(
    group: str, inputs: Sequence[bytes], paths: dict[str, PathFn], baseline: str
) -> list[Row]:
    references = [path_full_lanczos(data)[1] for data in inputs]
    seconds = time_paths(paths, inputs)
    rows = []
    for name, fn in paths.items():
        resize_db, stored_db, sizes = [], [], []
        for data, ref in zip(inputs, references, strict=True):
            stored, pixels = fn(data)
            resize_db.append(math.nan if pixels is None else psnr(pixels, ref))
            stored_db.append(psnr(decode(stored), ref))
            sizes.append(len(stored) / 1000)
        rows.append(
            Row(
                group,
                name,
                seconds[name] * 1000,
                seconds[name] / seconds[baseline],
                statistics.fmean(resize_db),
                statistics.fmean(stored_db),
                statistics.fmean(sizes),
            )
        )
    return rows


def bench_pool(inputs: Sequence[bytes]) -> list[tuple[str, float, float]]:
    """(name, wall ms, parent-process CPU ms) per image through a 2-process pool.

    The parent's CPU time is the hand-off itself (pickling, queues, result futures); it is far
    less sensitive to other load on the machine than the wall time.
    """
    options = ImageOptions(max_side=MAX_SIDE, quality=QUALITY)
    items = [(data, options) for data in inputs]
    batches = [items[i : i + POOL_BATCH] for i in range(0, len(items), POOL_BATCH)]
    timings: dict[str, tuple[float, float]] = {}

    def record(name: str, run: Callable[[], object]) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        run()
        wall = (time.perf_counter() - start) * 1000 / len(inputs)
        parent = (time.process_time() - cpu) * 1000 / len(inputs)
        timings[name] = min(timings.get(name, (math.inf, math.inf)), (wall, parent))

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(process_batch, [items[:2], items[2:4]]))  # start and warm both workers
        for _ in range(POOL_ROUNDS):
            record("in-process loop (no pool)", lambda: process_batch(items))
            record(
                "pool(2), 1 image per task",
                lambda: list(pool.map(process_image, inputs, repeat(options))),
            )
            record(
                f"pool(2), {POOL_BATCH} images per task",
                lambda: [r for batch in pool.map(process_batch, batches) for r in batch],
            )
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [ImageJob(os.path.join(tmp, f"{i}.jpg"), data) for i, data in enumerate(inputs)]
        timings["ImagePool(2), batched by the loop"] = asyncio.run(_through_pool(jobs, options))
    return [(name, wall, parent) for name, (wall, parent) in timings.items()]


async def _through_pool(jobs: Sequence[ImageJob], options: ImageOptions) -> tuple[float, float]:
    """What the pipeline does, best of POOL_ROUNDS: every job handed over at once and the pool
    batches them; it writes the files too. Its start is not timed (it starts before the
    downloads)."""
    best = (math.inf, math.inf)
    async with ImagePool(2) as pool:
        await pool.map("image", jobs[:4], options)  # both workers started and warm
        for _ in range(POOL_ROUNDS):
            start, cpu = time.perf_counter(), time.process_time()
            await pool.map("image", jobs, options)
            wall = (time.perf_counter() - start) * 1000 / len(jobs)
            best = min(best, (wall, (time.process_time() - cpu) * 1000 / len(jobs)))
    return best


def fmt_db(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def decide(rows: Sequence[Row], candidates: Sequence[str], tolerance_db: float = 0.5) -> str:
    """The fastest candidate whose stored PSNR is within ``tolerance_db`` of the reference's
    for every source size: equal visual quality in what the dataset actually keeps."""
    groups = {row.group for row in rows if row.path == REFERENCE}
    by_key = {(row.group, row.path): row for row in rows}
    passing = [
        path
        for path in candidates
        if all(
            by_key[g, path].stored_psnr >= by_key[g, REFERENCE].stored_psnr - tolerance_db
            for g in groups
        )
    ]
    return min(passing, key=lambda path: sum(by_key[g, path].ms for g in groups))


def main() -> None:
    started = time.perf_counter()
    load = os.getloadavg()[0]  # other work on the machine skews the pool numbers most
    photos = load_photos()
    big, medium = mosaics(photos, 6), crops_500(photos)
    small = small_jpegs(photos, POOL_IMAGES)
    resize_paths: dict[str, PathFn] = {
        "(a) full decode + thumbnail()": path_thumbnail,
        "(b1) draft >=1x + LANCZOS": draft_lanczos(1),
        "(b2) draft >=2x + LANCZOS": draft_lanczos(2),
        "(b4) draft >=2x + BICUBIC [kept]": draft_lanczos(2, method=Image.Resampling.BICUBIC),
        "(b3) thumbnail(LANCZOS, gap 2)": path_thumbnail_lanczos,
        "(b2) + optimize=True": draft_lanczos(2, optimize=True),  # optimal Huffman tables
        REFERENCE: path_full_lanczos,
        "process_image (all of it)": path_process_image,
    }
    small_paths: dict[str, PathFn] = {
        "(a) full decode + thumbnail()": path_thumbnail,
        "(a) + sha256 + phash": path_thumbnail_hashed,
        "(c) pass-through: verify+hash": path_passthrough,
        "(c2) pass-through: reduced decode": path_passthrough_reduced,
        "process_image (all of it)": path_process_image,
    }
    rows = [
        *bench_group("1024x768", big, resize_paths, "(a) full decode + thumbnail()"),
        *bench_group("500x375", medium, resize_paths, "(a) full decode + thumbnail()"),
        *bench_group("240 px", small[:12], small_paths, "(a) full decode + thumbnail()"),
    ]
    pool = bench_pool(small)

    print(
        f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} before the run; "
        f"best of {ROUNDS} rounds per path"
    )
    print("PSNR in dB against full decode + LANCZOS (for 240 px: the source itself)")
    print(
        f"{'source':9} {'path':34} {'ms/img':>7} {'vs (a)':>7} {'resize PSNR':>12} "
        f"{'stored PSNR':>12} {'stored kB':>10}"
    )
    for row in rows:
        print(
            f"{row.group:9} {row.path:34} {row.ms:7.2f} {row.ratio:6.2f}x "
            f"{fmt_db(row.resize_psnr):>12} {fmt_db(row.stored_psnr, 2):>12} {row.stored_kb:10.1f}"
        )
    kept = decide(rows, [p for p in resize_paths if p.startswith("(")])
    print(f"\nfastest path with stored PSNR within 0.5 dB of the reference: {kept}")
    print(f"\npool hand-off, {len(small)} 240-px JPEGs through process_image (pass-through)")
    print(f"  {'':34} {'wall ms/img':>11} {'vs loop':>8} {'parent CPU ms/img':>18}")
    base = pool[0][1]
    for name, wall, parent in pool:
        print(f"  {name:34} {wall:11.2f} {wall / base:7.2f}x {parent:18.2f}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
