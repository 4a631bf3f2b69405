"""Image bytes for the emulator's CDN, rendered from the six committed source photographs.

Each photo id gets its own picture: a seeded choice of source, orientation, crop, channel order
and gains, a coarse brightness mosaic and a few translucent shapes. The mosaic and the shapes
dominate the low frequencies that perceptual hashes look at, so two ids hash far apart, while
every size of one id shows the same picture (all geometry is in normalised coordinates).
"""

from __future__ import annotations

import io
import logging
import math
import random
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw

from .faults import stable_hash

log = logging.getLogger(__name__)

SOURCE_NAMES: tuple[str, ...] = (
    "astronaut.jpg",
    "chelsea.jpg",
    "coffee.jpg",
    "hubble_deep_field.jpg",
    "ihc.jpg",
    "rocket.jpg",
)
JPEG_QUALITY = 88
NEAR_DUPLICATE_QUALITY = 80
NEAR_DUPLICATE_GAIN = 1.04
PLACEHOLDER_SIZE = (500, 374)  # Flickr's photo_unavailable.png
BOMB_SIDE = 20000  # 400 megapixels: far over any sane decompression-bomb cap

_TRANSPOSES: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclass(frozen=True)
class RenderSpec:
    """What to encode: the pixels of ``visual_id`` at ``size`` in a given encoding."""

    seed: int
    visual_id: int
    size: tuple[int, int]  # output (width, height), upright
    full_size: tuple[int, int]  # the upright original's size (fixes the composition's aspect)
    square: bool = False  # centre square crop of the composition
    variant: str | None = None  # cmyk, png_alpha, progressive, exif_rotated, pixel_bomb
    near_duplicate: bool = False  # a slightly brighter, re-compressed copy


# ---------------------------------------------------------------------------------------------
# Sources


@lru_cache(maxsize=len(SOURCE_NAMES))
def _source(index: int) -> Image.Image:
    ref = resources.files(__package__).joinpath("photos").joinpath(SOURCE_NAMES[index])
    with ref.open("rb") as fh:
        img = Image.open(fh)
        img.load()
    return img.convert("RGB")


@lru_cache(maxsize=len(SOURCE_NAMES) * len(_TRANSPOSES) * 4)
def _level(index: int, transpose: int, level: int) -> Image.Image:
    """Source ``index`` transposed, reduced by 2**level (a pyramid, so crops resize cheaply)."""
    if level == 0:
        op = _TRANSPOSES[transpose]
        src = _source(index)
        return src if op is None else src.transpose(op)
    return _level(index, transpose, level - 1).reduce(2)


@dataclass(frozen=True)
class _Composition:
    source: int
    transpose: int
    crop: tuple[float, float, float, float]  # in level-0 pixels of the transposed source
    permutation: tuple[int, int, int]
    gains: tuple[float, float, float]
    mosaic: np.ndarray  # coarse brightness grid, values in (0, 1]
    shapes: tuple[tuple[str, tuple[float, float, float, float], tuple[int, int, int], int], ...]


@lru_cache(maxsize=4096)
def _composition(seed: int, visual_id: int, aspect: float) -> _Composition:
    rng = random.Random(stable_hash(f"{seed}:render:{visual_id}"))
    source = rng.randrange(len(SOURCE_NAMES))
    transpose = rng.randrange(len(_TRANSPOSES))
    sw, sh = _level(source, transpose, 0).size
    # The largest box of the photo's aspect that fits, scaled down to a seeded fraction.
    bw, bh = (sw, sw / aspect) if sw / aspect <= sh else (sh * aspect, sh)
    frac = rng.uniform(0.45, 0.95)
    cw, ch = bw * frac, bh * frac
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    grid = rng.choice((3, 4, 5))
    mosaic = np.array([[rng.uniform(0.3, 1.0) for _ in range(grid)] for _ in range(grid)])
    shapes = []
    for _ in range(rng.randint(3, 6)):
        kind = rng.choice(("ellipse", "rectangle"))
        w, h = rng.uniform(0.12, 0.4), rng.uniform(0.12, 0.4)
        x, y = rng.uniform(-0.05, 1.0 - w + 0.05), rng.uniform(-0.05, 1.0 - h + 0.05)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        shapes.append((kind, (x, y, x + w, y + h), colour, rng.randrange(120, 220)))
    return _Composition(
        source=source,
        transpose=transpose,
        crop=(x0, y0, x0 + cw, y0 + ch),
        permutation=rng.choice(_PERMUTATIONS),
        gains=(rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)),
        mosaic=mosaic,
        shapes=tuple(shapes),
    )


def render_pixels(spec: RenderSpec) -> Image.Image:
    """The upright RGB picture for ``spec`` (before any special encoding)."""
    fw, fh = spec.full_size
    comp = _composition(spec.seed, spec.visual_id, fw / fh)
    if spec.square:
        # Render the whole frame with its short side at the square's size, then centre-crop.
        side = spec.size[0]
        scale = side / min(fw, fh)
        frame = (max(side, round(fw * scale)), max(side, round(fh * scale)))
    else:
        frame = spec.size
    x0, y0, x1, y1 = comp.crop
    # Pick the smallest pyramid level that still has at least the output's resolution.
    level = 0
    while level < 3 and (x1 - x0) / 2 ** (level + 1) >= frame[0]:
        level += 1
    f = 2**level
    img = _level(comp.source, comp.transpose, level).resize(
        frame, Image.Resampling.BILINEAR, box=(x0 / f, y0 / f, x1 / f, y1 / f)
    )
    arr = np.asarray(img, dtype=np.float32)[:, :, list(comp.permutation)]
    arr *= np.array(comp.gains, dtype=np.float32)
    mosaic = Image.fromarray(comp.mosaic.astype(np.float32), mode="F").resize(
        frame, Image.Resampling.BILINEAR
    )
    arr *= np.asarray(mosaic, dtype=np.float32)[:, :, None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
    for kind, (a, b, c, d), colour, alpha in comp.shapes:
        # Blend a solid colour through a mask covering just the shape's clipped bounding box.
        left, top = max(0, math.floor(a * frame[0])), max(0, math.floor(b * frame[1]))
        right, bottom = (
            min(frame[0], math.ceil(c * frame[0])),
            min(frame[1], math.ceil(d * frame[1])),
        )
        if right <= left or bottom <= top:
            continue
        mask = Image.new("L", (right - left, bottom - top), 0)
        shape_box = (
            a * frame[0] - left,
            b * frame[1] - top,
            c * frame[0] - left,
            d * frame[1] - top,
        )
        getattr(ImageDraw.Draw(mask), kind)(shape_box, fill=alpha)
        img.paste(colour, (left, top, right, bottom), mask)
    if spec.square:
        side = spec.size[0]
        left, top = (frame[0] - side) // 2, (frame[1] - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if spec.near_duplicate:
        arr = np.asarray(img, dtype=np.float32) * NEAR_DUPLICATE_GAIN
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
    return img


def encode(spec: RenderSpec) -> tuple[bytes, str]:
    """Encoded bytes and their Content-Type for ``spec``."""
    if spec.variant == "pixel_bomb":
        return pixel_bomb_png(), "image/png"
    img = render_pixels(spec)
    quality = NEAR_DUPLICATE_QUALITY if spec.near_duplicate else JPEG_QUALITY
    buf = io.BytesIO()
    if spec.variant == "png_alpha":
        alpha = Image.linear_gradient("L").resize(img.size).point(lambda v: 64 + v * 3 // 4)
        rgba = img.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"
    if spec.variant == "cmyk":
        img.convert("CMYK").save(buf, format="JPEG", quality=quality)
    elif spec.variant == "progressive":
        img.save(buf, format="JPEG", quality=quality, progressive=True)
    elif spec.variant == "exif_rotated":
        # Stored sideways with the EXIF Orientation that turns it upright again
        # (6: rotate 90 clockwise to display; 8: 90 counter-clockwise).
        orientation = 6 if spec.visual_id % 2 else 8
        stored = img.transpose(
            Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
        )
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(buf, format="JPEG", quality=quality, exif=exif)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), "image/jpeg"


# ---------------------------------------------------------------------------------------------
# Special files


@lru_cache(maxsize=1)
def placeholder_png() -> bytes:
    """Flickr's "This photo is no longer available" placeholder, as a small grey PNG."""
    img = Image.new("RGB", PLACEHOLDER_SIZE, (238, 238, 238))
    draw = ImageDraw.Draw(img)
    cx, cy = PLACEHOLDER_SIZE[0] // 2, PLACEHOLDER_SIZE[1] // 2 - 30
    draw.rectangle((cx - 60, cy - 40, cx + 60, cy + 40), outline=(170, 170, 170), width=6)
    draw.ellipse((cx - 22, cy - 22, cx + 22, cy + 22), outline=(170, 170, 170), width=6)
    draw.line((cx - 70, cy + 50, cx + 70, cy - 50), fill=(200, 80, 80), width=6)
    draw.text((cx - 110, cy + 80), "This photo is no longer available", fill=(120, 120, 120))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


@lru_cache(maxsize=1)
def pixel_bomb_png() -> bytes:
    """A valid 1-bit PNG of BOMB_SIDE x BOMB_SIDE black pixels (about 40 KB on the wire).

    Written by hand, row by row, because Pillow would need the whole 400 MP canvas in memory.
    """
    ihdr = BOMB_SIDE.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1-bit greyscale
    row = b"\x00" + b"\x00" * math.ceil(BOMB_SIDE / 8)  # filter byte + packed pixels
    comp = zlib.compressobj(9)
    block = row * 500
    parts = [comp.compress(block) for _ in range(BOMB_SIDE // 500)]
    parts.append(comp.flush())
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        ]
    )


# ---------------------------------------------------------------------------------------------
# Cache


class ImageCache:
    """A byte-bounded, thread-safe LRU of encoded images (rendering is the costly part)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[RenderSpec, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, spec: RenderSpec) -> tuple[bytes, str] | None:
        with self._lock:
            item = self._data.get(spec)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(spec)
            self.hits += 1
            return item

    def put(self, spec: RenderSpec, item: tuple[bytes, str]) -> None:
        size = len(item[0])
        if size > self.max_bytes // 4:
            return  # one huge original must not flush everything else
        with self._lock:
            if spec in self._data:
                return
            self._data[spec] = item
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (old, _) = self._data.popitem(last=False)
                self._bytes -= len(old)

    def get_or_render(self, spec: RenderSpec) -> tuple[bytes, str]:
        item = self.get(spec)
        if item is None:
            item = encode(spec)
            self.put(spec, item)
        return item
