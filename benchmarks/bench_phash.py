"""Perceptual hash, OLD against NEW: do dedup decisions change on a realistic mixed corpus?

OLD (hash version 1) is ``imagehash.phash(hash_size=8)`` of the full decode of the stored JPEG.
NEW (hash version 2) is ``imaging.stored_phash``: a DCT-scaled, luma-only reduced decode, LANCZOS
to 32x32, then the same DCT-and-median bits. Both hash the same stored bytes, but their 32x32
pixels differ slightly, so a DCT coefficient lying very close to the median of the 64 can land
on the other side of it. The median splits the 64 bits 32/32 (barring exact ties), so bits
move in pairs and every Hamming distance is even (a threshold of 5 acts as 4). A dedup decision
can change only where a pair of images is within the threshold under one hash and not under the
other: it *straddles* the threshold. The planner sees hashes only through the relation "within
the threshold", so with no straddling pair the plans are identical; this module finds every
straddling pair, runs the real planner (``dedup.plan_dedup``) with each hash, and shows which
decisions the pairs change.
``tests/test_phash_agreement.py`` asserts the same on the same corpus (it imports
:func:`build_corpus` from here).

    python -m benchmarks.bench_phash        # about 15 s on 2 CPUs

Not registered in ``benchmarks/__main__.py``.

The corpus is deterministic and rendered in memory from ``asyncds/emulator/photos/*.jpg``. It
mimics what a Flickr tag search returns: many distinct photos, some of them uploaded again by
other people or found under another tag, re-saved, resized, slightly cropped, retouched or
rotated.

- *bases*: distinct pictures uploaded as 240-px baseline JPEGs q90 (Flickr's ``url_s``, passed
  through by ``process_image``): random crops of one photo at various scales and positions,
  2x2 mosaics of crops, and crops with a colour shift. A candidate is kept only if it is at
  least :data:`MIN_BASE_DISTANCE` bits from every kept base under *both* hashes: bases are not
  copies of one another, and the margin keeps copies away from other bases (here every copy is
  at least 10 bits from every base but its own, beyond the largest threshold, 8).
- *near copies* of some bases, which dedup should drop: exact byte copies (under a new photo id,
  or the same photo id found under another class), re-encodes (JPEG q95/q75/q50, PNG), larger
  sources of the same picture (500 px, 1024 px: ``process_image`` downsizes them), slight crops
  (1-3 %), brightness or contrast +-5 %, a light blur, and a sideways JPEG with an EXIF
  orientation tag (``process_image`` turns it upright).
- *far copies*, which dedup should keep: rotations by 90/180/270 degrees and mirror and
  upside-down flips (pHash is not rotation-invariant, and nothing asks it to be).

Rows are spread over three classes, each in a shuffled search order (a copy may come before its
original); most copies share their base's class (``duplicate``/``near_duplicate``), a quarter go
to another class (``cross_class``). Both cross-class policies are planned.
"""

from __future__ import annotations

import io
import math
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import PIL
import scipy.fftpack
from PIL import Image, ImageEnhance, ImageFilter, features

from asyncds import imaging
from asyncds.dedup import plan_dedup
from asyncds.files import image_relpath
from asyncds.imaging import ImageOptions, process_image
from asyncds.state import CandidateRow, Status

PHOTOS = Path(__file__).resolve().parent.parent / "asyncds" / "emulator" / "photos"
CLASSES = ("cat", "dog", "fox")
THRESHOLDS = (4, 8)  # the default phash_distance and the largest the config allows
POLICIES = ("drop", "keep-first")
SEED = 2024
N_BASES = 480
MIN_BASE_DISTANCE = 14  # 8 (the largest threshold) + room for an edited copy's drift
COPY_SHARE = 0.65  # of bases that get derived copies (1-3 each)
CROSS_CLASS_SHARE = 0.25  # of derived copies filed under another class than their base
BASE_QUALITY = 90
SOURCE_QUALITY = 92  # larger sources (500/1024 px)
BLUR_RADIUS = 0.8  # px at 240 px: a light blur
LANCZOS = Image.Resampling.LANCZOS
OPTIONS = ImageOptions()
TIMING_IMAGES = 200
TIMING_ROUNDS = 7

# Kinds of derived copy and how often each is drawn. Near kinds are copies dedup should drop.
NEAR_KINDS: dict[str, int] = {
    "exact": 3,
    "same_photo": 1,
    "jpeg_q95": 2,
    "jpeg_q75": 3,
    "jpeg_q50": 2,
    "png": 1,
    "src_500": 3,
    "src_1024": 2,
    "crop_1": 2,
    "crop_2": 2,
    "crop_3": 2,
    "bright+5": 1,
    "bright-5": 1,
    "contrast+5": 1,
    "contrast-5": 1,
    "blur": 2,
    "exif_rot": 1,
}
FAR_KINDS: dict[str, int] = {"rot90": 1, "rot180": 1, "rot270": 1, "mirror": 2, "flip": 1}
_TRANSPOSE = {
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip": Image.Transpose.FLIP_TOP_BOTTOM,
}

Box = tuple[float, float, float, float]
Key = tuple[str, str]  # (label, photo id), as dedup decisions name rows


@dataclass(frozen=True, slots=True)
class Picture:
    """How a base is drawn: one crop (or 2x2 crops) of the photos, and an optional colour shift.

    Rendered straight from the source photos at any size, so a 1024-px "original" and its
    240-px version are the same picture, as on Flickr.
    """

    tiles: tuple[tuple[str, Box], ...]
    aspect: float  # width / height
    colour: str = ""

    @property
    def style(self) -> str:
        return "mosaic" if len(self.tiles) > 1 else "colour" if self.colour else "crop"

    def size(self, side: int) -> tuple[int, int]:
        """Pixel size with the longest side ``side``."""
        if self.aspect >= 1:
            return side, max(1, round(side / self.aspect))
        return max(1, round(side * self.aspect)), side

    def render(self, side: int) -> Image.Image:
        w, h = self.size(side)
        if len(self.tiles) == 1:
            name, box = self.tiles[0]
            im = _resize(photo(name), (w, h), box)
        else:
            im = Image.new("RGB", (w, h))
            xs, ys = (0, w // 2, w), (0, h // 2, h)
            for i, (name, box) in enumerate(self.tiles):
                c, r = i % 2, i // 2
                tile = _resize(photo(name), (xs[c + 1] - xs[c], ys[r + 1] - ys[r]), box)
                im.paste(tile, (xs[c], ys[r]))
        return _COLOURS[self.colour](im) if self.colour else im


@dataclass(frozen=True, slots=True)
class Item:
    """One search result: its row fields, how it was made, and what both hashes make of it."""

    label: str
    photo_id: str
    seq: int  # search rank within its class
    kind: str  # "base", or a key of NEAR_KINDS / FAR_KINDS
    style: str  # the base's Picture.style
    base: str  # name of the base it derives from (its own name for a base)
    stored: bytes  # process_image(...).data
    sha256: str
    old: int  # imagehash.phash of the full decode of ``stored``
    new: int  # process_image(...).phash, i.e. imaging.stored_phash(stored)

    @property
    def name(self) -> str:
        """``label/photo_id``: unique in the corpus (a photo id recurs only across classes)."""
        return f"{self.label}/{self.photo_id}"

    def row(self, new: bool) -> CandidateRow:
        """The state row dedup plans on, carrying the NEW hash or the OLD one."""
        return CandidateRow(
            label=self.label,
            photo_id=self.photo_id,
            seq=self.seq,
            url=f"http://127.0.0.1/{self.photo_id}_m.jpg",
            width=240,
            height=180,
            owner="1@N01",
            ownername="Jane",
            title=self.kind,
            license=4,
            date_upload=0,
            status=Status.OK,
            sha256=self.sha256,
            phash=imaging.phash_to_hex(self.new if new else self.old),
            path=image_relpath(self.label, self.photo_id),
        )


@dataclass(frozen=True, slots=True, eq=False)
class Corpus:
    """The items, and what the comparisons computed from them (computed once: the test asks
    for the same plans and distances several times)."""

    items: tuple[Item, ...]  # in no particular order; plans sort by search rank
    candidates: int  # base pictures drawn; those too close to a kept base were discarded
    memo: dict[object, Any] = field(default_factory=dict, repr=False)

    def by_name(self) -> dict[str, Item]:
        return {item.name: item for item in self.items}

    def distances(self) -> tuple[np.ndarray, np.ndarray]:
        """All-pairs Hamming distances of the items under OLD and under NEW."""
        if "distances" not in self.memo:
            self.memo["distances"] = distances(self.items)
        return self.memo["distances"]


# -- rendering ------------------------------------------------------------------------------


@cache
def photo(name: str) -> Image.Image:
    with Image.open(PHOTOS / f"{name}.jpg") as im:
        return im.convert("RGB")


def photo_names() -> list[str]:
    return sorted(p.stem for p in PHOTOS.glob("*.jpg"))


def _resize(im: Image.Image, size: tuple[int, int], box: Box) -> Image.Image:
    # BICUBIC after a box reduce: 2-3x cheaper than LANCZOS here, and rendering the pictures is
    # not what is under test (process_image's own resizing is).
    return im.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)


def jpeg(im: Image.Image, quality: int = BASE_QUALITY, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, **params)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _tint(im: Image.Image, gains: tuple[float, float, float]) -> Image.Image:
    arr = np.asarray(im, dtype=np.float32) * np.array(gains, dtype=np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _hue(im: Image.Image, shift: int) -> Image.Image:
    h, s, v = im.convert("HSV").split()
    return Image.merge("HSV", (h.point(lambda x: (x + shift) % 256), s, v)).convert("RGB")


_COLOURS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "swap_rb": lambda im: Image.merge("RGB", im.split()[::-1]),
    "rotate_channels": lambda im: Image.merge("RGB", (*im.split()[1:], im.split()[0])),
    "warm": lambda im: _tint(im, (1.15, 1.0, 0.8)),
    "cool": lambda im: _tint(im, (0.8, 0.95, 1.2)),
    "hue+64": lambda im: _hue(im, 64),
    "hue-96": lambda im: _hue(im, -96),
    "grey": lambda im: im.convert("L").convert("RGB"),
    "negative": lambda im: Image.eval(im, lambda x: 255 - x),
}


def _random_box(rng: random.Random, name: str, aspect: float, min_scale: float) -> Box:
    """A box of ``aspect``, ``min_scale``-100 % as wide as the widest such box in the photo."""
    pw, ph = photo(name).size
    w = min(pw, ph * aspect) * rng.uniform(min_scale, 1.0)
    h = w / aspect
    left, top = rng.uniform(0, pw - w), rng.uniform(0, ph - h)
    return (left, top, left + w, top + h)


def _random_picture(rng: random.Random, names: Sequence[str]) -> Picture:
    """A crop (60 %), a 2x2 mosaic of crops (25 %) or a colour-shifted crop (15 %)."""
    aspect = rng.choice((4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3))
    roll = rng.random()
    if roll < 0.25:
        tile_names = [rng.choice(names) for _ in range(4)]
        return Picture(tuple((n, _random_box(rng, n, aspect, 0.25)) for n in tile_names), aspect)
    name = rng.choice(names)
    colour = rng.choice(sorted(_COLOURS)) if roll < 0.4 else ""
    return Picture(((name, _random_box(rng, name, aspect, 0.3)),), aspect, colour)


# -- derived copies -------------------------------------------------------------------------


def _crop(picture: Picture, rng: random.Random, percent: int) -> Image.Image:
    """The picture with ``percent`` % of its width and height cut away (unevenly per side),
    at 240 px: rendered a little larger, then cropped, as Flickr sizes a cropped original."""
    keep = 1 - percent / 100
    im = picture.render(math.ceil(240 / keep))
    w, h = im.size
    cw, ch = int(w * keep), int(h * keep)  # the longest side becomes 240
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((left, top, left + cw, top + ch))


def derive(
    kind: str, picture: Picture, base: Image.Image, upload: bytes, rng: random.Random
) -> bytes:
    """The bytes of a ``kind`` copy of a base: drawn by ``picture``, rendered as ``base`` (240
    px) and uploaded as ``upload``."""
    if kind in ("exact", "same_photo"):
        return upload
    if kind.startswith("jpeg_q"):  # someone re-saved the downloaded file
        return jpeg(decode(upload), quality=int(kind.removeprefix("jpeg_q")))
    if kind == "png":
        out = io.BytesIO()
        decode(upload).save(out, "PNG")
        return out.getvalue()
    if kind.startswith("src_"):  # a larger size of the same original
        return jpeg(picture.render(int(kind.removeprefix("src_"))), quality=SOURCE_QUALITY)
    if kind.startswith("crop_"):
        return jpeg(_crop(picture, rng, int(kind.removeprefix("crop_"))))
    if kind.startswith(("bright", "contrast")):
        enhancer = ImageEnhance.Brightness if kind.startswith("bright") else ImageEnhance.Contrast
        return jpeg(enhancer(base).enhance(1 + int(kind[-2:]) / 100))
    if kind == "blur":
        return jpeg(base.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
    if kind == "exif_rot":  # stored sideways with orientation 6, as a camera writes it
        exif = Image.Exif()
        exif[0x0112] = 6
        return jpeg(base.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    return jpeg(base.transpose(_TRANSPOSE[kind]))


# -- the corpus -----------------------------------------------------------------------------


def old_phash(stored: bytes) -> int:
    """OLD: ``imagehash.phash`` of the full decode, as an int in ``str()`` bit order."""
    with Image.open(io.BytesIO(stored)) as im:
        return int(str(imagehash.phash(im, hash_size=8)), 16)


@dataclass(frozen=True, slots=True)
class _Processed:
    upload: bytes
    stored: bytes
    sha256: str
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class _Draft:
    label: str
    photo_id: str
    kind: str
    style: str
    base: str
    processed: _Processed


def _process(upload: bytes) -> _Processed:
    result = process_image(upload, OPTIONS)
    assert result.ok and result.data is not None, result.reason
    return _Processed(upload, result.data, result.sha256, old_phash(result.data), result.phash)


@cache
def build_corpus(n_bases: int = N_BASES, seed: int = SEED) -> Corpus:
    """``n_bases`` distinct bases and copies of some of them, processed and hashed both ways.

    Deterministic for given Pillow and libjpeg-turbo versions: the seed draws the same
    pictures, copies, classes and search order, and the distinctness check keeps the same bases.
    """
    rng = random.Random(seed)
    names = photo_names()
    kinds = {**NEAR_KINDS, **FAR_KINDS}
    bases: list[_Processed] = []
    drafts: list[_Draft] = []
    candidates = 0
    while len(bases) < n_bases:
        candidates += 1
        if candidates > 10 * n_bases:
            raise RuntimeError(f"only {len(bases)} distinct bases in {candidates} candidates")
        picture = _random_picture(rng, names)
        rendered = picture.render(240)
        base = _process(jpeg(rendered))
        if any(
            (base.old ^ q.old).bit_count() < MIN_BASE_DISTANCE
            or (base.new ^ q.new).bit_count() < MIN_BASE_DISTANCE
            for q in bases
        ):
            continue
        bases.append(base)
        label = rng.choice(CLASSES)
        photo_id = str(10_000 + len(drafts))  # unique, as Flickr's
        base_name = f"{label}/{photo_id}"
        drafts.append(_Draft(label, photo_id, "base", picture.style, base_name, base))
        if rng.random() >= COPY_SHARE:
            continue
        others = [c for c in CLASSES if c != label]
        for kind in rng.choices(list(kinds), list(kinds.values()), k=rng.choice((1, 2, 2, 3))):
            if kind == "same_photo":  # the same Flickr photo, found by another class's search
                other = rng.choice(others)
                if all((d.label, d.photo_id) != (other, photo_id) for d in drafts[-3:]):
                    drafts.append(_Draft(other, photo_id, kind, picture.style, base_name, base))
                continue  # a search returns a photo once per class
            copy = _process(derive(kind, picture, rendered, base.upload, rng))
            drafts.append(
                _Draft(
                    rng.choice(others) if rng.random() < CROSS_CLASS_SHARE else label,
                    str(10_000 + len(drafts)),
                    kind,
                    picture.style,
                    base_name,
                    copy,
                )
            )

    rng.shuffle(drafts)  # the search order: a copy may come before its original
    seq: Counter[str] = Counter()
    items = []
    for d in drafts:
        seq[d.label] += 1
        p = d.processed
        items.append(
            Item(
                d.label, d.photo_id, seq[d.label], d.kind, d.style, d.base,
                p.stored, p.sha256, p.old, p.new,
            )
        )  # fmt: skip
    return Corpus(tuple(items), candidates)


# -- comparison -----------------------------------------------------------------------------


def plan(corpus: Corpus, *, new: bool, threshold: int, policy: str) -> dict[Key, str]:
    """What the real planner drops with one hash: ``(label, photo id) -> status``."""
    key = ("plan", new, threshold, policy)
    if key not in corpus.memo:
        decisions = plan_dedup(
            [item.row(new) for item in corpus.items],
            class_order=CLASSES,
            max_distance=threshold,
            cross_class=policy,
        )
        corpus.memo[key] = {(d.label, d.photo_id): d.status for d in decisions}
    return corpus.memo[key]


def decision_differences(corpus: Corpus, threshold: int, policy: str) -> dict[Key, tuple[str, str]]:
    """Rows whose fate differs: ``(label, photo id) -> (status under OLD, under NEW)``."""
    old = plan(corpus, new=False, threshold=threshold, policy=policy)
    new = plan(corpus, new=True, threshold=threshold, policy=policy)
    return {
        key: (old.get(key, Status.OK), new.get(key, Status.OK))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


def distances(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs Hamming distance matrices under OLD and under NEW."""
    return _all_pairs([item.old for item in items]), _all_pairs([item.new for item in items])


_POPCOUNT8 = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def _all_pairs(hashes: Sequence[int]) -> np.ndarray:
    # a byte table rather than np.bitwise_count, which needs numpy 2 (the project allows 1.24)
    h = np.array(hashes, dtype=np.uint64)
    xor = (h[:, None] ^ h).view(np.uint8).reshape(len(h), len(h), 8)
    return _POPCOUNT8[xor].sum(axis=2, dtype=np.int16)


def straddling_pairs(corpus: Corpus, threshold: int) -> dict[tuple[str, str], tuple[int, int]]:
    """Pairs within ``threshold`` under one hash only: ``(name, name) -> (OLD, NEW distance)``.

    Only these can make the plans differ (see the module docstring).
    """
    items = corpus.items
    old, new = corpus.distances()
    mask = np.triu((old <= threshold) != (new <= threshold), k=1)
    pairs = {}
    for a, b in zip(*np.nonzero(mask), strict=True):
        first, second = sorted((items[a].name, items[b].name))
        pairs[first, second] = (int(old[a, b]), int(new[a, b]))
    return dict(sorted(pairs.items()))


def hash_pixels(stored: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The 32x32 grey pixels OLD and NEW hash (NEW as in ``imaging.stored_phash``)."""
    with Image.open(io.BytesIO(stored)) as im:
        old = im.convert("L").resize((32, 32), LANCZOS)
    with Image.open(io.BytesIO(stored)) as im:
        im.draft("L", (32, 32))
        new = im.convert("L").resize((32, 32), LANCZOS)
    return np.asarray(old), np.asarray(new)


def moved_bits(item: Item) -> list[tuple[int, int, float]]:
    """The bits OLD and NEW disagree on: (bit, rank of its coefficient under OLD, margin).

    Rank 1 is the smallest of the 64 coefficients, so the median lies between ranks 32 and 33.
    The margin is the coefficient's largest distance from the median (under OLD or NEW) in
    standard deviations of the 64: the bits that move are those sitting on the median.
    """
    old_px, new_px = hash_pixels(item.stored)
    assert imaging.phash_of_pixels(old_px) == item.old, "hash_pixels must mirror imagehash"
    assert imaging.phash_of_pixels(new_px) == item.new, "and imaging.stored_phash"
    coefficients = [  # imagehash's own definition
        scipy.fftpack.dct(scipy.fftpack.dct(px.astype(np.float64), axis=0), axis=1)[:8, :8].ravel()
        for px in (old_px, new_px)
    ]
    margins = np.maximum(*(np.abs(c - np.median(c)) / c.std() for c in coefficients))
    ranks = np.argsort(np.argsort(coefficients[0])) + 1
    diff = item.old ^ item.new
    return [
        (bit, int(ranks[bit]), float(margins[bit])) for bit in range(64) if diff >> (63 - bit) & 1
    ]


def explain(pair: tuple[str, str], corpus: Corpus) -> str:
    """What the two images of a straddling pair are, and which bits moved in each."""
    by_name = corpus.by_name()
    parts = []
    for name in pair:
        item = by_name[name]
        what = "base" if item.kind == "base" else f"{item.kind} of {item.base}"
        bits = moved_bits(item)
        moved = (
            f"bits of ranks {sorted(r for _, r, _ in bits)} moved "
            f"(<= {max(m for *_, m in bits):.3f} sd from the median)"
            if bits
            else "no bit moved"
        )
        parts.append(f"{name} ({what}, {item.style}): {moved}")
    return "; ".join(parts)


def explaining_pairs(corpus: Corpus, threshold: int) -> dict[str, list[tuple[str, str]]]:
    """For each image, the straddling pairs among the images it is linked to.

    Linked: within ``threshold`` of each other under either hash, directly or through others
    (identical bytes or one photo id mean identical hashes, so those links are included). A
    decision can only change through a straddling pair linked to the row, possibly a few
    matches away: under ``drop``, a copy poisoned by a cross-class match poisons the rest.
    """
    items = corpus.items
    old, new = corpus.distances()
    parent = list(range(len(items)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(
        *np.nonzero(np.triu((old <= threshold) | (new <= threshold), k=1)), strict=True
    ):
        parent[root(int(a))] = root(int(b))
    by_root: dict[int, list[tuple[str, str]]] = defaultdict(list)
    index = {item.name: i for i, item in enumerate(items)}
    for pair in straddling_pairs(corpus, threshold):
        by_root[root(index[pair[0]])].append(pair)
    return {item.name: by_root.get(root(i), []) for i, item in enumerate(items)}


# -- report ---------------------------------------------------------------------------------


def _histogram(values: Sequence[int]) -> str:
    return " ".join(f"{d}:{n}" for d, n in sorted(Counter(values).items()))


def _statuses(drops: dict[Key, str]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(Counter(drops.values()).items()))


def _time_per_image(fn: Callable[[bytes], int], data: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for d in data:
        fn(d)
    return (time.perf_counter() - started) / len(data) * 1e3


def _full_decode(stored: bytes) -> int:
    with Image.open(io.BytesIO(stored)) as im:
        im.load()
    return 0


def _reduced_decode(stored: bytes) -> int:
    with Image.open(io.BytesIO(stored)) as im:
        im.draft("L", (32, 32))
        im.load()
    return 0


def main() -> None:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    corpus = build_corpus()
    items = corpus.items
    by_name = corpus.by_name()
    print(
        f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}, "
        f"ImageHash {imagehash.__version__}, {os.cpu_count()} CPUs, load average {load:.2f}; "
        f"corpus built in {time.perf_counter() - started:.1f} s"
    )

    bases = [i for i in items if i.kind == "base"]
    print(f"\n== corpus: {len(items)} images in {len(CLASSES)} classes")
    styles = Counter(i.style for i in bases)
    print(
        f"bases: {len(bases)} distinct ({', '.join(f'{n} {s}' for s, n in styles.items())}), "
        f"kept from {corpus.candidates} candidates (>= {MIN_BASE_DISTANCE} bits apart under both)"
    )
    copies = [i for i in items if i.kind != "base"]
    cross = sum(i.label != by_name[i.base].label for i in copies)
    print(
        f"copies: {len(copies)} of {len({i.base for i in copies})} bases, {cross} in another class"
    )
    print(f"classes: {dict(sorted(Counter(i.label for i in items).items()))}")

    own = [(i.old ^ i.new).bit_count() for i in items]
    print(f"\n== OLD vs NEW hash of the same stored image, {len(items)} images")
    print(
        f"mean {statistics.fmean(own):.2f} bits, max {max(own)}, identical "
        f"{own.count(0) / len(own):.1%}; histogram (bits:images) {_histogram(own)}"
    )

    print("\n== distance of each copy to its base (bits:copies)")
    per_kind: dict[str, list[Item]] = defaultdict(list)
    for item in copies:
        per_kind[item.kind].append(item)
    print(
        f"{'kind':<11} {'n':>3}  {'OLD mean/max':>12}  {'NEW mean/max':>12}  "
        f"{'<=4 OLD/NEW':>11}  {'<=8 OLD/NEW':>11}  histogram OLD | NEW"
    )
    for kind in [*NEAR_KINDS, *FAR_KINDS]:
        group = per_kind.get(kind, [])
        if not group:
            continue
        base_of = [by_name[i.base] for i in group]
        old = [(i.old ^ b.old).bit_count() for i, b in zip(group, base_of, strict=True)]
        new = [(i.new ^ b.new).bit_count() for i, b in zip(group, base_of, strict=True)]
        within = [
            f"{sum(d <= t for d in old):>5}/{sum(d <= t for d in new):<5}" for t in THRESHOLDS
        ]
        print(
            f"{kind:<11} {len(group):>3}  {statistics.fmean(old):>7.2f}/{max(old):<4}"
            f"  {statistics.fmean(new):>7.2f}/{max(new):<4}  {within[0]}  {within[1]}  "
            f"{_histogram(old)} | {_histogram(new)}"
        )

    print("\n== dedup decisions (plan_dedup on all rows), OLD hashes vs NEW hashes")
    old_d, new_d = corpus.distances()
    upper = np.triu(np.ones_like(old_d, dtype=bool), k=1)
    for threshold in THRESHOLDS:
        within_old, within_new = (old_d <= threshold) & upper, (new_d <= threshold) & upper
        pairs = straddling_pairs(corpus, threshold)
        print(
            f"phash_distance {threshold}: pairs within it: OLD {int(within_old.sum())}, NEW "
            f"{int(within_new.sum())}, both {int((within_old & within_new).sum())}; "
            f"straddling (within under one hash only): {len(pairs)}"
        )
        for pair, (d_old, d_new) in pairs.items():
            print(f"    {pair[0]} ~ {pair[1]}: OLD {d_old}, NEW {d_new}. {explain(pair, corpus)}")
        linked = explaining_pairs(corpus, threshold)
        for policy in POLICIES:
            old = plan(corpus, new=False, threshold=threshold, policy=policy)
            new = plan(corpus, new=True, threshold=threshold, policy=policy)
            diff = decision_differences(corpus, threshold, policy)
            print(
                f"  cross_class {policy}: drops OLD {len(old)} {_statuses(old)}, "
                f"NEW {len(new)} {_statuses(new)}; "
                + (f"{len(diff)} rows differ" if diff else "the same decisions")
            )
            for (label, photo_id), (was, now) in diff.items():
                name = f"{label}/{photo_id}"
                print(f"    {name}: OLD {was}, NEW {now}; through {linked[name]}")

    stored = [i.stored for i in bases[:TIMING_IMAGES]]
    paths: dict[str, Callable[[bytes], int]] = {
        "OLD: full decode + imagehash.phash": old_phash,
        "NEW: imaging.stored_phash": imaging.stored_phash,
        "  full decode only": _full_decode,
        "  reduced decode only": _reduced_decode,
    }
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(TIMING_ROUNDS):  # interleaved rounds: other load slows all paths alike
        for label, fn in paths.items():
            best[label] = min(best[label], _time_per_image(fn, stored))
    print(f"\n== time per image, {len(stored)} stored 240-px JPEGs, best of {TIMING_ROUNDS}")
    for label, ms in best.items():
        print(f"{label:<36} {ms:6.3f} ms")
    ratio = best["OLD: full decode + imagehash.phash"] / best["NEW: imaging.stored_phash"]
    print(f"NEW is {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
