"""A lean Flickr-shaped server for comparing downloaders on equal terms (``bench_peers``).

It runs in a process of its own and serves, from memory, a fixed catalogue of N distinct JPEGs:

- ``GET|POST /services/rest/``: ``flickr.photos.search`` in Flickr's JSON shape
  (``format=json&nojsoncallback=1``), honouring ``tags``/``tag_mode``, ``min_upload_date`` /
  ``max_upload_date`` (inclusive), ``per_page`` (<= 500), ``page`` and ``extras``; answers are
  sorted newest first, ``total`` is uncapped like Flickr's. ``flickr.photos.licenses.getInfo``
  is answered too; any other method fails with Flickr's code 112.
- ``GET /img/<i>.jpg``: image ``i``'s bytes (``image/jpeg``), after ``--latency-ms`` if set.
- ``GET /stats`` (and ``POST /stats/reset``): requests seen, for checking that a contender
  fetched every image once; counting is one integer increment per request.

Kinds of image (generated once, deterministically, cached under ``benchmarks/.cache/``):

- ``s1``: what Flickr's ``url_s`` serves: 240 px on the longest side (mostly 240x180), baseline
  JPEG q90, about 13 kB; search results carry only ``url_s``/``width_s``/``height_s``.
- ``s2``: 1024x768 camera-like JPEG q90 (mosaics of four native-resolution crops), about
  180 kB; search results carry only ``url_l``/``width_l``/``height_l``.

Every image is a seeded variation of a photo in ``asyncds/emulator/photos`` (crop, transpose,
channel order and gains, a coarse brightness mosaic, translucent shapes): the mosaic and shapes
dominate the low frequencies a perceptual hash looks at, so images hash far apart and no
downloader's dedup may drop any. :func:`min_phash_distance` checks that for a whole set.

    python -m benchmarks.neutral_server --kind s1 --count 20000 --classes 4 [--latency-ms 50]
        [--port 0] [--cache-dir benchmarks/.cache]

It prints ``READY <port>`` on stdout once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import io
import json
import math
import random
import socket
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from aiohttp import web
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "asyncds" / "emulator" / "photos"
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
KINDS = ("s1", "s2")
GENERATOR_VERSION = 1  # bump when the pictures change: the cache is keyed on it
CHUNK = 500  # images per cache file
QUALITY = 90
# Images are generated at least this many bits apart (asyncds drops <= 4 by default; the margin
# covers the few bits a re-encode to 240 px may flip).
MIN_PHASH_DISTANCE = 10
PHOTO_ID_BASE = 50_000_000_000  # photo i has id PHOTO_ID_BASE + i
DATE_LO = 1104537600  # 2005-01-01T00:00:00Z
DATE_HI = 1704067199  # 2023-12-31T23:59:59Z: before "today", where asyncds's search ends
MAX_PER_PAGE = 500
LANCZOS = Image.Resampling.LANCZOS
_TRANSPOSES: tuple[Image.Transpose | None, ...] = (None, *Image.Transpose)
_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
# (width, height) of an s1 image and its weight: Flickr's url_s is 240 px on the longest side.
_S1_SIZES = (((240, 180), 6), ((180, 240), 2), ((240, 160), 1), ((240, 240), 1))
S2_SIZE = (1024, 768)


# -- image generation -------------------------------------------------------------------------


def _seed(kind: str, index: int, attempt: int = 0) -> int:
    text = f"{kind}:{GENERATOR_VERSION}:{index}:{attempt}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8])


@cache
def _photo(name: str, transpose: int) -> Image.Image:
    with Image.open(PHOTOS / name) as im:
        rgb = im.convert("RGB")
    op = _TRANSPOSES[transpose]
    return rgb if op is None else rgb.transpose(op)


def _photo_names() -> list[str]:
    return sorted(p.name for p in PHOTOS.glob("*.jpg"))


def _vary(img: Image.Image, rng: random.Random) -> Image.Image:
    """Channel order and gains, a coarse smooth brightness mosaic and translucent shapes."""
    w, h = img.size
    arr = np.asarray(img, dtype=np.float32)[:, :, list(rng.choice(_PERMUTATIONS))]
    arr *= np.array([rng.uniform(0.75, 1.25) for _ in range(3)], dtype=np.float32)
    grid = rng.choice((3, 4, 5))
    cells = np.array([[rng.uniform(0.2, 1.0) for _ in range(grid)] for _ in range(grid)])
    mosaic = Image.fromarray(cells.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
    arr *= np.asarray(mosaic, dtype=np.float32)[:, :, None]
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
    for _ in range(rng.randint(2, 4)):
        sw, sh = rng.uniform(0.12, 0.4) * w, rng.uniform(0.12, 0.4) * h
        x, y = rng.uniform(-0.05 * w, w - sw), rng.uniform(-0.05 * h, h - sh)
        box = (max(0, math.floor(x)), max(0, math.floor(y)))
        right, bottom = min(w, math.ceil(x + sw)), min(h, math.ceil(y + sh))
        if right <= box[0] or bottom <= box[1]:
            continue
        mask = Image.new("L", (right - box[0], bottom - box[1]), 0)
        draw = ImageDraw.Draw(mask)
        shape = (x - box[0], y - box[1], x + sw - box[0], y + sh - box[1])
        alpha = rng.randrange(90, 200)
        if rng.random() < 0.5:
            draw.ellipse(shape, fill=alpha)
        else:
            draw.rectangle(shape, fill=alpha)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        out.paste(colour, (*box, right, bottom), mask)
    return out


def _encode(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)  # baseline, 4:2:0, standard tables
    return buf.getvalue()


def render_s1(index: int, attempt: int = 0) -> bytes:
    """Image ``index`` of kind s1: a 240-px baseline JPEG q90 (a LANCZOS-reduced photo crop)."""
    rng = random.Random(_seed("s1", index, attempt))
    names = _photo_names()
    ((w, h),) = rng.choices([s for s, _ in _S1_SIZES], weights=[n for _, n in _S1_SIZES])
    src = _photo(names[rng.randrange(len(names))], rng.randrange(len(_TRANSPOSES)))
    sw, sh = src.size
    aspect = w / h
    bw, bh = (sw, sw / aspect) if sw / aspect <= sh else (sh * aspect, sh)
    frac = rng.uniform(0.55, 1.0)
    cw, ch = bw * frac, bh * frac
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    img = src.resize((w, h), LANCZOS, box=(x0, y0, x0 + cw, y0 + ch), reducing_gap=3.0)
    return _encode(_vary(img, rng))


def render_s2(index: int, attempt: int = 0) -> bytes:
    """Image ``index`` of kind s2: 1024x768 JPEG q90, four native-resolution 512x384 crops."""
    rng = random.Random(_seed("s2", index, attempt))
    tiles = [
        (name, t)
        for name in _photo_names()
        for t in range(len(_TRANSPOSES))
        if _photo(name, t).width >= 512 and _photo(name, t).height >= 384
    ]
    canvas = Image.new("RGB", S2_SIZE)
    for j in range(4):
        src = _photo(*rng.choice(tiles))
        x, y = rng.randrange(src.width - 511), rng.randrange(src.height - 383)
        canvas.paste(src.crop((x, y, x + 512, y + 384)), ((j % 2) * 512, (j // 2) * 384))
    return _encode(_vary(canvas, rng))


RENDER = {"s1": render_s1, "s2": render_s2}


def phash_of(data: bytes) -> tuple[int, tuple[int, int]]:
    """(64-bit perceptual hash as asyncds computes it, (width, height)) of a JPEG.

    asyncds hashes the stored image, at most 240 px: for larger sources, hash a 240-px reduction.
    """
    with Image.open(io.BytesIO(data)) as im:
        size = im.size
        im.draft("RGB", (480, 360))  # DCT-scaled decode, as asyncds's own reduction does
        im.load()
        if max(im.size) > 240:
            scale = 240 / max(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), LANCZOS)
        bits = imagehash.phash(im, hash_size=8).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2), size


def _chunk_path(cache_dir: Path, kind: str, chunk: int) -> Path:
    return cache_dir / f"{kind}-v{GENERATOR_VERSION}" / f"{chunk:05d}.npz"


def _render_chunk(args: tuple[str, int]) -> list[tuple[bytes, int, tuple[int, int]]]:
    """First attempts at a chunk's images: (bytes, phash, size) each; runs in a worker."""
    kind, chunk = args
    render = RENDER[kind]
    out = []
    for i in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        data = render(i)
        out.append((data, *phash_of(data)))
    return out


class _Accepted:
    """The phashes accepted so far, for the distinctness rule of :func:`ensure_images`."""

    def __init__(self, capacity: int) -> None:
        self.hashes = np.zeros(max(1, capacity), dtype=np.uint64)
        self.n = 0

    def add(self, phash: int) -> None:
        if self.n == len(self.hashes):
            self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
        self.hashes[self.n] = phash
        self.n += 1

    def too_close(self, phash: int) -> bool:
        if not self.n:
            return False
        nearest = int(np.bitwise_count(self.hashes[: self.n] ^ np.uint64(phash)).min())
        return nearest < MIN_PHASH_DISTANCE


def ensure_images(kind: str, count: int, cache_dir: Path = DEFAULT_CACHE, workers: int = 2) -> int:
    """Generate (once) every cache chunk that images 0..count-1 need; how many were made.

    Image ``i`` is the first attempt (a seed of kind, i, attempt) whose phash is at least
    ``MIN_PHASH_DISTANCE`` bits from every image before it, so any prefix of a set is distinct
    and image ``i`` is the same whatever the count. Chunks are rendered in parallel, accepted
    in order.
    """
    if kind not in RENDER:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    needed = math.ceil(count / CHUNK)
    first_missing = next(
        (c for c in range(needed) if not _chunk_path(cache_dir, kind, c).exists()), needed
    )
    if first_missing == needed:
        return 0
    accepted = _Accepted(needed * CHUNK)
    for c in range(first_missing):
        with np.load(_chunk_path(cache_dir, kind, c)) as npz:
            for h in npz["phash"]:
                accepted.add(int(h))
    jobs = [(kind, c) for c in range(first_missing, needed)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for c, firsts in zip(
            range(first_missing, needed), pool.map(_render_chunk, jobs), strict=True
        ):
            blobs, hashes, sizes, attempts = [], [], [], []
            for k, (data, phash, size) in enumerate(firsts):
                attempt = 0
                while accepted.too_close(phash):
                    attempt += 1
                    data = RENDER[kind](c * CHUNK + k, attempt)
                    phash, size = phash_of(data)
                accepted.add(phash)
                blobs.append(data)
                hashes.append(phash)
                sizes.append(size)
                attempts.append(attempt)
            _save_chunk(_chunk_path(cache_dir, kind, c), blobs, hashes, sizes, attempts)
    return needed - first_missing


def _save_chunk(
    path: Path,
    blobs: list[bytes],
    hashes: list[int],
    sizes: list[tuple[int, int]],
    attempts: list[int],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        data=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64),
        phash=np.array(hashes, dtype=np.uint64),
        size=np.array(sizes, dtype=np.int32),
        attempt=np.array(attempts, dtype=np.int32),
    )
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class ImageSet:
    kind: str
    images: list[bytes]
    phashes: np.ndarray  # uint64, one per image
    sizes: list[tuple[int, int]]  # (width, height)
    rerolled: int  # images whose first attempt was too close to an earlier one

    @property
    def mean_kb(self) -> float:
        return sum(map(len, self.images)) / max(1, len(self.images)) / 1000


def load_images(kind: str, count: int, cache_dir: Path = DEFAULT_CACHE) -> ImageSet:
    """Images 0..count-1 of ``kind`` (generated first if the cache lacks them)."""
    ensure_images(kind, count, cache_dir)
    images: list[bytes] = []
    hashes: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    rerolled = 0
    for chunk in range(math.ceil(count / CHUNK)):
        take = min(CHUNK, count - chunk * CHUNK)
        with np.load(_chunk_path(cache_dir, kind, chunk)) as npz:
            data, offsets = npz["data"].tobytes(), npz["offsets"]
            hashes.append(npz["phash"][:take])
            sizes += [(int(w), int(h)) for w, h in npz["size"][:take]]
            rerolled += int(np.count_nonzero(npz["attempt"][:take]))
        images += [data[offsets[k] : offsets[k + 1]] for k in range(take)]
    phashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    return ImageSet(kind, images, phashes, sizes, rerolled)


def min_phash_distance(phashes: np.ndarray) -> int:
    """The smallest Hamming distance between any two hashes (65 for fewer than two)."""
    best = 65
    h = phashes.astype(np.uint64)
    for k in range(len(h) - 1):
        best = min(best, int(np.bitwise_count(h[k + 1 :] ^ h[k]).min()))
    return best


# -- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Catalogue:
    """N photos in ``classes`` tags ``c0``, ``c1``, ... (contiguous blocks of ids), each with
    an upload date; a class's photos are spread evenly over 2005..2023, oldest first."""

    kind: str
    count: int
    classes: int
    base_url: str
    sizes: list[tuple[int, int]]  # (width, height) of each image

    def class_range(self, k: int) -> range:
        lo = self.count * k // self.classes
        return range(lo, self.count * (k + 1) // self.classes)

    def tag(self, k: int) -> str:
        return f"c{k}"

    def class_sizes(self) -> list[int]:
        return [len(self.class_range(k)) for k in range(self.classes)]

    def date(self, index: int) -> int:
        k = self.class_of(index)
        r = self.class_range(k)
        return DATE_LO + (index - r.start) * (DATE_HI - DATE_LO) // max(1, len(r))

    def class_of(self, index: int) -> int:
        # Blocks are as even as integer division makes them; search from the estimate.
        k = min(self.classes - 1, index * self.classes // max(1, self.count))
        while index < self.class_range(k).start:
            k -= 1
        while index >= self.class_range(k).stop:
            k += 1
        return k

    def url(self, index: int) -> str:
        return f"{self.base_url}/img/{index}.jpg"

    def urls(self) -> list[str]:
        return [self.url(i) for i in range(self.count)]

    def photo(self, index: int, extras: frozenset[str]) -> dict[str, Any]:
        k = self.class_of(index)
        photo: dict[str, Any] = {
            "id": str(PHOTO_ID_BASE + index),
            "owner": f"{10000000 + index % 977}@N0{index % 10}",
            "secret": f"{_seed('secret', index) & 0xFFFFFFFFFF:010x}",
            "server": "65535",
            "farm": 66,
            "title": f"bench photo {index}",
            "ispublic": 1,
            "isfriend": 0,
            "isfamily": 0,
        }
        if "license" in extras:
            photo["license"] = str(index % 11)
        if "owner_name" in extras:
            photo["ownername"] = f"bench owner {index % 977}"
        if "date_upload" in extras:
            photo["dateupload"] = str(self.date(index))
        if "tags" in extras:
            photo["tags"] = self.tag(k)
        suffix = "s" if self.kind == "s1" else "l"
        if f"url_{suffix}" in extras:
            width, height = self.sizes[index]
            photo[f"url_{suffix}"] = self.url(index)
            photo[f"width_{suffix}"] = width
            photo[f"height_{suffix}"] = height
        return photo


# -- the server -------------------------------------------------------------------------------

LICENSES = [
    {"id": str(i), "name": name, "url": ""}
    for i, name in enumerate(
        [
            "All Rights Reserved",
            "CC BY-NC-SA 2.0",
            "CC BY-NC 2.0",
            "CC BY-NC-ND 2.0",
            "CC BY 2.0",
            "CC BY-SA 2.0",
            "CC BY-ND 2.0",
            "No known copyright restrictions",
            "United States Government Work",
            "Public Domain Dedication (CC0)",
            "Public Domain Mark",
        ]
    )
]


class NeutralServer:
    """The aiohttp app; per image request only a list lookup (and the optional sleep)."""

    def __init__(self, catalogue: Catalogue, images: list[bytes], latency_s: float) -> None:
        self.catalogue = catalogue
        self.images = images
        self.latency_s = latency_s
        self.hits = [0] * len(images)
        self.api_calls = 0
        # Per class: the photo indices oldest first and their dates, for window bisection.
        self._dates = [
            [catalogue.date(i) for i in catalogue.class_range(k)] for k in range(catalogue.classes)
        ]
        self._tags = {catalogue.tag(k): k for k in range(catalogue.classes)}
        self._fragments: dict[frozenset[str], list[str]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/services/rest/", self.rest)
        app.router.add_route("*", "/services/rest", self.rest)
        app.router.add_get("/img/{index:\\d+}.jpg", self.image)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/stats/reset", self.reset)
        return app

    async def image(self, request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        if index >= len(self.images):
            raise web.HTTPNotFound()
        self.hits[index] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return web.Response(body=self.images[index], content_type="image/jpeg")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "api_calls": self.api_calls,
                "image_requests": sum(self.hits),
                "distinct_images": sum(1 for h in self.hits if h),
                "repeated_images": sum(1 for h in self.hits if h > 1),
                "count": len(self.images),
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.hits = [0] * len(self.images)
        self.api_calls = 0
        return web.json_response({"ok": True})

    async def rest(self, request: web.Request) -> web.Response:
        self.api_calls += 1
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        method = params.get("method", "")
        if not params.get("api_key"):
            body = {"stat": "fail", "code": 100, "message": "Invalid API Key (Key not found)"}
        elif method == "flickr.photos.search":
            return self._answer(params, self.search(params))
        elif method == "flickr.photos.licenses.getInfo":
            body = {"licenses": {"license": LICENSES}, "stat": "ok"}
        else:
            body = {"stat": "fail", "code": 112, "message": f'Method "{method}" not found'}
        return self._answer(params, json.dumps(body))

    @staticmethod
    def _answer(params: dict[str, str], text: str) -> web.Response:
        if params.get("nojsoncallback") != "1":
            text = f"jsonFlickrApi({text})"
        return web.Response(text=text, content_type="application/json")

    def _matches(self, params: dict[str, str]) -> list[int]:
        """Indices of the classes the tags select (``-tag`` excludes nothing here)."""
        tags = [t.strip().lower() for t in params.get("tags", "").split(",") if t.strip()]
        wanted = {self._tags[t] for t in tags if t in self._tags}
        if params.get("tag_mode") == "all" and len({t for t in tags if not t.startswith("-")}) > 1:
            return []  # every photo has exactly one tag
        return sorted(wanted)

    def search(self, params: dict[str, str]) -> str:
        lo = _int(params.get("min_upload_date"), 0)
        hi = _int(params.get("max_upload_date"), 2**62)
        per_page = max(1, min(MAX_PER_PAGE, _int(params.get("per_page"), 100)))
        page = max(1, _int(params.get("page"), 1))
        extras = frozenset(e.strip() for e in params.get("extras", "").split(",") if e.strip())
        matched = self._matches(params)
        found: list[int] = []
        for k in matched:
            dates, start = self._dates[k], self.catalogue.class_range(k).start
            a, b = bisect.bisect_left(dates, lo), bisect.bisect_right(dates, hi)
            found.extend(range(start + a, start + b))
        if len(matched) > 1:
            found.sort(key=lambda i: (-self.catalogue.date(i), i))  # newest first
        else:
            found.reverse()  # a class's photos are stored oldest first
        total = len(found)
        shown = found[(page - 1) * per_page : page * per_page]
        fragments = self._fragments_for(extras)
        photos = ",".join(fragments[i] for i in shown)
        pages = math.ceil(total / per_page)
        return (
            f'{{"photos":{{"page":{page},"pages":{pages},"perpage":{per_page},'
            f'"total":{total},"photo":[{photos}]}},"stat":"ok"}}'
        )

    def _fragments_for(self, extras: frozenset[str]) -> list[str]:
        """Each photo's JSON for one extras list, built on first use (asyncds sends one)."""
        if extras not in self._fragments:
            self._fragments[extras] = [
                json.dumps(self.catalogue.photo(i, extras), separators=(",", ":"))
                for i in range(self.catalogue.count)
            ]
        return self._fragments[extras]


def _int(value: str | None, default: int) -> int:
    try:
        return int(float(value)) if value not in (None, "") else default
    except ValueError:
        return default


async def serve(
    kind: str,
    count: int,
    classes: int,
    latency_ms: float,
    port: int,
    cache_dir: Path,
    ready: Iterable[str] = ("READY",),
) -> None:
    image_set = load_images(kind, count, cache_dir)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    catalogue = Catalogue(kind, count, classes, f"http://127.0.0.1:{port}", image_set.sizes)
    server = NeutralServer(catalogue, image_set.images, latency_ms / 1000)
    server._fragments_for(frozenset(_ASYNCDS_EXTRAS))  # build before READY, not on first call
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    print(" ".join(ready), port, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# What asyncds's client asks for (asyncds.flickr.EXTRAS); pre-building it only saves the first
# search call a few hundred milliseconds, so it is fine if asyncds changes it.
_ASYNCDS_EXTRAS = "license,owner_name,date_upload,tags,url_s,url_n,url_m,url_z,url_c,url_l,url_o"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, default="s1")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--classes", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    if not 1 <= args.classes <= args.count:
        parser.error("--classes must be within 1..count")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency of asyncds on Linux
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(
            serve(args.kind, args.count, args.classes, args.latency_ms, args.port, args.cache_dir)
        )


if __name__ == "__main__":
    sys.exit(main())
