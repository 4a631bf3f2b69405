"""The emulator's deterministic photo catalog.

Everything about a photo except which tags it is filed under is a pure function of
``(seed, photo id)``: the image server can answer for any id without having seen a search,
so a restarted emulator serves the same bytes for the same URL.

Id layout (11 decimal digits, like today's Flickr ids)::

    regular photo:  ID_BASE + (dateupload - T0) * SLOTS + r          r in [0, SLOTS)
    duplicate:      ID_BASE + DUP_BASE + 2 * (target - ID_BASE) + k  k = 0 exact, 1 near
    video:          ID_BASE + VIDEO_BASE + (beside - ID_BASE)

so a regular id encodes its upload second (ids grow with time, as on Flickr), a duplicate
encodes the photo it copies and a video the photo it was uploaded beside (same second, same
tags). Videos are extra entries: a tag's photos are the same with or without them.
"""

from __future__ import annotations

import math
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache, reduce
from typing import Generic, TypeVar

import numpy as np

from .faults import decide_permanent, mix64, stable_hash, stream_key, unit, unit_array, unit_exact

T0 = 1104537600  # 2005-01-01 00:00:00 UTC
T1 = 1767225599  # 2025-12-31 23:59:59 UTC
ID_BASE = 10_000_000_000
SLOTS = 32
DUP_BASE = 22_000_000_000
VIDEO_BASE = 65_000_000_000
_MAX_REGULAR_CORE = (T1 - T0) * SLOTS + SLOTS - 1
_MAX_DUP_CORE = DUP_BASE + 2 * _MAX_REGULAR_CORE + 1
_MAX_VIDEO_CORE = VIDEO_BASE + _MAX_REGULAR_CORE
assert _MAX_DUP_CORE < VIDEO_BASE and ID_BASE + _MAX_VIDEO_CORE < 10**11  # 11 digits, disjoint
MEDIA = ("all", "photos", "videos")  # flickr.photos.search `media`; Flickr's default is all
C_SIZES_SINCE = 1330560000  # 2012-03-01: Flickr made the 800 px ("_c") size from then on
B_SIZES_SINCE = 1274745600  # 2010-05-25: before it the 1024 px size only for big originals
SEARCH_CAP = 4000  # Flickr returns at most the first 4,000 results of any query
# Share of the pool of shared photos that each tag takes; high so two tags overlap a lot.
_SHARE_TAKE = 0.75

_LICENSE_WEIGHTS = np.array([40, 8, 6, 6, 10, 4, 2, 2, 1, 3, 2, 5, 3, 2, 2, 2, 2], dtype=np.float64)
_LICENSE_CUM = np.cumsum(_LICENSE_WEIGHTS) / _LICENSE_WEIGHTS.sum()

SORTS = (
    "date-posted-desc",
    "date-posted-asc",
    "date-taken-desc",
    "date-taken-asc",
    "interestingness-desc",
    "interestingness-asc",
    "relevance",
)


@dataclass(frozen=True)
class SizeSpec:
    extra: str | None  # the search extra that asks for it (url_X), None if not offered
    suffix: str  # "" for the 500 px size, which has no suffix
    longest: int | None  # None for the original
    square: bool = False


# Flickr's size table (flickr-api.md §3). url_s is the 240 px "_m" size: the names do not match.
SIZES: tuple[SizeSpec, ...] = (
    SizeSpec("url_sq", "s", 75, square=True),
    SizeSpec("url_t", "t", 100),
    SizeSpec("url_s", "m", 240),
    SizeSpec("url_q", "q", 150, square=True),
    SizeSpec("url_m", "", 500),
    SizeSpec("url_n", "n", 320),
    SizeSpec(None, "w", 400),
    SizeSpec("url_z", "z", 640),
    SizeSpec("url_c", "c", 800),
    SizeSpec("url_l", "b", 1024),
    SizeSpec("url_o", "o", None),
)
SIZE_BY_SUFFIX: dict[str, SizeSpec] = {s.suffix: s for s in SIZES}
SIZE_BY_EXTRA: dict[str, SizeSpec] = {s.extra: s for s in SIZES if s.extra}


@dataclass(frozen=True, slots=True)
class PhotoInfo:
    """One photo's attributes, all derived from (seed, id)."""

    id: str
    owner: str
    ownername: str
    title: str
    license: int
    dateupload: int
    datetaken: int
    width: int  # original size (upright)
    height: int
    secret: str
    originalsecret: str
    server: str
    farm: int
    has_original: bool
    visual_id: int  # whose pixels this photo shows: the copied photo for a duplicate
    duplicate: str | None  # "exact_duplicate", "near_duplicate" or None
    words: tuple[str, ...]  # filler tags
    media: str = "photo"  # or "video" (its url_X sizes are still frames, as on Flickr)

    @property
    def longest(self) -> int:
        return max(self.width, self.height)


# ---------------------------------------------------------------------------------------------
# Pure helpers on ids


def normalize_tag(tag: str) -> str:
    """Flickr's "clean" tag form: lower case, no whitespace."""
    return "".join(tag.lower().split())


def is_valid_id(photo_id: int) -> bool:
    core = photo_id - ID_BASE
    if 0 <= core <= _MAX_REGULAR_CORE:
        return True
    return DUP_BASE <= core <= _MAX_DUP_CORE or VIDEO_BASE <= core <= _MAX_VIDEO_CORE


def is_duplicate_id(photo_id: int) -> bool:
    return DUP_BASE <= photo_id - ID_BASE < VIDEO_BASE


def is_video_id(photo_id: int) -> bool:
    return photo_id - ID_BASE >= VIDEO_BASE


def video_id(beside: int) -> int:
    """The id of the video uploaded beside regular photo ``beside``."""
    return beside + VIDEO_BASE


def duplicate_id(target: int, kind: str) -> int:
    return ID_BASE + DUP_BASE + 2 * (target - ID_BASE) + (kind == "near_duplicate")


def duplicate_target(photo_id: int) -> tuple[int, str]:
    """The photo a duplicate copies, and whether it is an exact or a near copy."""
    rel = photo_id - ID_BASE - DUP_BASE
    return ID_BASE + rel // 2, ("near_duplicate" if rel % 2 else "exact_duplicate")


def regular_date(photo_id: int) -> int:
    return T0 + (photo_id - ID_BASE) // SLOTS


def _dup_delay(seed: int, photo_id: int) -> int:
    # A re-upload comes an hour to two years after the original.
    return 3600 + int(unit_exact(seed, "dup_delay", photo_id) * 2 * 365 * 86400)


def date_of(seed: int, photo_id: int) -> int:
    """Upload time (unix seconds) of a photo."""
    if is_video_id(photo_id):
        return regular_date(photo_id - VIDEO_BASE)
    if not is_duplicate_id(photo_id):
        return regular_date(photo_id)
    target, _ = duplicate_target(photo_id)
    return min(T1, regular_date(target) + _dup_delay(seed, photo_id))


def dates_of(seed: int, ids: np.ndarray) -> np.ndarray:
    """Vectorised :func:`date_of`."""
    ids = ids.astype(np.int64)
    core = ids - ID_BASE
    video = core >= VIDEO_BASE
    core = np.where(video, core - VIDEO_BASE, core)  # a video shares its photo's second
    out = T0 + core // SLOTS
    dup = (core >= DUP_BASE) & ~video
    if dup.any():
        rel = core[dup] - DUP_BASE
        target_core = rel // 2
        delay = 3600 + (unit_array(seed, "dup_delay", ids[dup]) * 2 * 365 * 86400).astype(np.int64)
        out[dup] = np.minimum(T1, T0 + target_core // SLOTS + delay)
    return out


def taken_of(seed: int, ids: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Date taken: mostly shortly before the upload, sometimes years before."""
    lag = unit_array(seed, "taken", ids) ** 3 * (3 * 365 * 86400)
    return dates - lag.astype(np.int64)


def licenses_of(seed: int, ids: np.ndarray) -> np.ndarray:
    u = unit_array(seed, "license", ids)
    return np.searchsorted(_LICENSE_CUM, u, side="right").astype(np.int8)


def license_of(seed: int, photo_id: int) -> int:
    return int(np.searchsorted(_LICENSE_CUM, unit_exact(seed, "license", photo_id), side="right"))


def parse_photo_id(text: str) -> int | None:
    if not (text.isascii() and text.isdigit() and len(text) == 11):
        return None
    value = int(text)
    return value if is_valid_id(value) else None


# ---------------------------------------------------------------------------------------------
# Photo attributes

_ADJECTIVES = (
    "sleepy", "golden", "quiet", "tiny", "wild", "happy", "misty", "old", "bright", "lazy",
    "curious", "autumn", "winter", "summer", "spring", "morning", "evening", "little", "big",
    "red", "blue", "green", "urban", "rural", "hidden", "lonely", "playful", "ancient",
)  # fmt: skip
_NOUNS = (
    "afternoon", "walk", "friend", "garden", "window", "street", "light", "portrait", "field",
    "visitor", "moment", "corner", "sunset", "river", "path", "shadow", "house", "market",
    "trip", "weekend", "detail", "study", "dream", "view", "road", "park", "beach", "harbour",
)  # fmt: skip
_FIRST = (
    "Anna", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kemal", "Lena", "Marco", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tomoko",
    "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe",
)  # fmt: skip
_LAST = (
    "Almeida", "Becker", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Murphy", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
    "Tanaka", "Usman", "Varga", "Weber", "Yilmaz", "Zhang",
)  # fmt: skip
_ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1), (5, 4), (2, 1), (7, 5))
_OWNERS = 5000


@lru_cache(maxsize=8192)
def _owner(seed: int, index: int) -> tuple[str, str]:
    rng = random.Random(stable_hash(f"{seed}:owner:{index}"))
    nsid = f"{rng.randrange(10_000_000, 200_000_000)}@N0{rng.randrange(0, 9)}"
    style = rng.random()
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    if style < 0.5:
        name = f"{first} {last}"
    elif style < 0.8:
        name = f"{first.lower()}{rng.randrange(1, 999)}"
    else:
        name = f"{last} Photography"
    return nsid, name


@lru_cache(maxsize=65536)
def original_dims(seed: int, visual_id: int, small_rate: float) -> tuple[int, int]:
    """Upright original (width, height) of the pixels shown under ``visual_id``."""
    rng = random.Random(stable_hash(f"{seed}:dims:{visual_id}"))
    if decide_permanent(seed, "small", small_rate, visual_id):
        longest = rng.randint(16, 63)
    else:
        r = rng.random()
        if r < 0.05:
            longest = rng.randint(240, 499)  # old, low-resolution upload: no 500 px size
        elif r < 0.95:
            longest = int(500 * 6 ** rng.random())  # 500..3000, log-uniform
        else:
            longest = rng.randint(3000, 6000)
    a, b = rng.choice(_ASPECTS)
    shortest = max(1, round(longest * b / a))
    return (longest, shortest) if rng.random() < 0.7 else (shortest, longest)


def size_dims(info: PhotoInfo, suffix: str) -> tuple[int, int] | None:
    """(width, height) Flickr serves for ``suffix``, or None when that size does not exist."""
    spec = SIZE_BY_SUFFIX.get(suffix)
    if spec is None:
        return None
    w, h = info.width, info.height
    if spec.longest is None:
        return (w, h) if info.has_original else None
    target = spec.longest
    if spec.square:
        return (target, target) if min(w, h) >= target else None
    # A thumbnail always exists (at most the original's size); larger sizes only when the
    # original is at least that big, and "_c" / "_b" only for uploads after they were introduced.
    too_small = suffix != "t" and max(w, h) < target
    too_old = (suffix == "c" and info.dateupload < C_SIZES_SINCE) or (
        suffix == "b" and info.dateupload < B_SIZES_SINCE and max(w, h) <= 1280
    )
    if too_small or too_old:
        return None
    scale = min(1.0, target / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _title(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.15:
        return f"IMG_{rng.randrange(1, 9999):04d}"
    if r < 0.25:
        return f"DSC{rng.randrange(1, 99999):05d}"
    if r < 0.3:
        return ""
    return f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"


def _server_farm(rng: random.Random, date: int) -> tuple[str, int]:
    # Newer photos live on server 65535 / farm 66; older ones on 4-digit servers.
    if date >= 1514764800:  # 2018
        return "65535", 66
    return str(rng.randrange(1000, 8000)), rng.randrange(1, 10)


@lru_cache(maxsize=65536)
def photo_info(seed: int, photo_id: int, small_rate: float = 0.0) -> PhotoInfo | None:
    """All attributes of a photo, or None when ``photo_id`` is not a photo id."""
    if not is_valid_id(photo_id):
        return None
    rng = random.Random(stable_hash(f"{seed}:photo:{photo_id}"))
    date = date_of(seed, photo_id)
    taken = int(taken_of(seed, np.array([photo_id]), np.array([date]))[0])
    duplicate: str | None = None
    visual = photo_id
    if is_duplicate_id(photo_id):
        visual, duplicate = duplicate_target(photo_id)
    width, height = original_dims(seed, visual, small_rate)
    owner, ownername = _owner(seed, rng.randrange(_OWNERS))
    server, farm = _server_farm(rng, date)
    key = stream_key(seed, "secret")
    secret = f"{mix64(key ^ photo_id):016x}"[:10]
    osecret = f"{mix64(key ^ mix64(photo_id)):016x}"[:10]
    has_original = rng.random() < 0.35 or max(width, height) < 64
    words = tuple(sorted({rng.choice(_NOUNS), rng.choice(_ADJECTIVES)}))
    return PhotoInfo(
        id=str(photo_id),
        owner=owner,
        ownername=ownername,
        title=_title(rng),
        license=license_of(seed, photo_id),
        dateupload=date,
        datetaken=taken,
        width=width,
        height=height,
        secret=secret,
        originalsecret=osecret,
        server=server,
        farm=farm,
        has_original=has_original,
        visual_id=visual,
        duplicate=duplicate,
        words=words,
        media="video" if is_video_id(photo_id) else "photo",
    )


# ---------------------------------------------------------------------------------------------
# Searches

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A small thread-safe LRU of computed values."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)
        return value


@dataclass(frozen=True)
class SearchQuery:
    """A normalised ``flickr.photos.search`` query (only what selects and orders photos)."""

    tags: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    tag_mode: str = "any"
    min_upload: int | None = None
    max_upload: int | None = None
    min_taken: int | None = None
    max_taken: int | None = None
    licenses: tuple[int, ...] | None = None
    sort: str = "date-posted-desc"
    media: str = "all"  # one of MEDIA

    def key(self) -> str:
        """The query's identity for seeded orders (relevance, page repeats).

        Without ``media``: the photos of a query then keep their order and page repeats whether
        or not videos are asked for, and seeds from before ``media`` existed keep theirs.
        """
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "media"
        )
        return f"{type(self).__qualname__}({shown})"


@dataclass(frozen=True)
class _Base:
    """Every photo of a tag combination, sorted by upload date (for bisecting date windows)."""

    ids: np.ndarray
    dates: np.ndarray


class Catalog:
    """Which photos each tag has, and the search over them. Cheap to build; cached per tag."""

    def __init__(
        self,
        seed: int = 0,
        tag_sizes: Mapping[str, int] | None = None,
        default_tag_size: int = 6000,
        shared_fraction: float = 0.01,
        exact_duplicate: float = 0.0,
        near_duplicate: float = 0.0,
        small: float = 0.0,
        video: float = 0.0,
    ) -> None:
        if default_tag_size < 0:
            raise ValueError(f"default_tag_size must be >= 0, got {default_tag_size}")
        if not 0.0 <= shared_fraction <= 1.0:
            raise ValueError(f"shared_fraction must be within 0..1, got {shared_fraction}")
        self.seed = seed
        self.tag_sizes = {normalize_tag(t): int(n) for t, n in (tag_sizes or {}).items()}
        for tag, n in self.tag_sizes.items():
            if n < 0:
                raise ValueError(f"tag size of {tag!r} must be >= 0, got {n}")
        self.default_tag_size = default_tag_size
        self.shared_fraction = shared_fraction
        self.exact_duplicate = exact_duplicate
        self.near_duplicate = near_duplicate
        self.small = small
        self.video = video
        self._tags: _LRU[str, np.ndarray] = _LRU(64)
        self._videos: _LRU[str, np.ndarray] = _LRU(64)
        self._bases: _LRU[tuple, _Base] = _LRU(64)
        self._results: _LRU[SearchQuery, np.ndarray] = _LRU(128)

    # -- per tag -------------------------------------------------------------------------------

    def tag_size(self, tag: str) -> int:
        return self.tag_sizes.get(normalize_tag(tag), self.default_tag_size)

    def tag_ids(self, tag: str) -> np.ndarray:
        """The sorted ids of every photo filed under ``tag`` (exactly ``tag_size(tag)``)."""
        tag = normalize_tag(tag)
        return self._tags.get_or_compute(tag, lambda: self._build_tag(tag))

    def tag_video_ids(self, tag: str) -> np.ndarray:
        """The sorted ids of the videos filed under ``tag``: one beside each of ``video`` of its
        regular photos. Derived from the photos, never changing them."""
        tag = normalize_tag(tag)

        def build() -> np.ndarray:
            ids = self.tag_ids(tag)
            if self.video <= 0.0:
                return ids[:0]
            regular = ids[ids - ID_BASE < DUP_BASE]
            return video_id(regular[unit_array(self.seed, "video", regular) < self.video])

        return self._videos.get_or_compute(tag, build)

    def photo(self, photo_id: int) -> PhotoInfo | None:
        return photo_info(self.seed, photo_id, self.small)

    def _rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([stable_hash(f"{self.seed}:{name}")])

    def _pool_ids(self, js: np.ndarray) -> np.ndarray:
        """Ids of the shared pool's photos ``js``: recent-leaning dates, any tag may take them."""
        u = unit_array(self.seed, "pool_date", js)
        dates = (u**0.6 * (T1 - T0)).astype(np.int64)
        slots = (unit_array(self.seed, "pool_slot", js) * SLOTS).astype(np.int64)
        return ID_BASE + dates * SLOTS + slots

    def _shared_members(self, tag: str, n: int) -> np.ndarray:
        k = min(n, round(self.shared_fraction * n))
        if k == 0:
            return np.empty(0, dtype=np.int64)
        # A tag takes each of the first ceil(k / take) pool photos with probability `take`,
        # so two tags share about take * min(k_a, k_b) photos.
        js = np.arange(math.ceil(k / _SHARE_TAKE), dtype=np.int64)
        taken = js[unit_array(self.seed, f"share:{tag}", js) < _SHARE_TAKE][:k]
        return np.unique(self._pool_ids(taken))

    def _candidate_ids(self, tag: str, count: int) -> np.ndarray:
        """At least ``count`` distinct regular ids, in random order, with clustered dates."""
        rng = self._rng(f"tag:{tag}")
        k = int(rng.integers(3, 9))
        centers = rng.uniform(T0, T1, k)
        widths = np.exp(rng.uniform(math.log(2 * 86400), math.log(400 * 86400), k))
        weights = np.append(rng.dirichlet(np.ones(k)) * 0.75, 0.25)
        ids = np.empty(0, dtype=np.int64)
        draw = int(count * 1.1) + 64
        while len(ids) < count:
            comp = rng.choice(k + 1, size=draw, p=weights)
            clustered = rng.normal(
                centers[np.minimum(comp, k - 1)], widths[np.minimum(comp, k - 1)]
            )
            uniform = rng.uniform(T0, T1, draw)
            dates = np.clip(np.where(comp == k, uniform, clustered), T0, T1).astype(np.int64)
            cores = (dates - T0) * SLOTS + rng.integers(0, SLOTS, draw)
            ids = np.unique(np.concatenate([ids, ID_BASE + cores]))
            draw *= 2
        return rng.permutation(ids)

    def _build_tag(self, tag: str) -> np.ndarray:
        n = self.tag_size(tag)
        shared = self._shared_members(tag, n)
        m = n - len(shared)
        if m <= 0:
            return shared
        cands = np.setdiff1d(self._candidate_ids(tag, m + len(shared)), shared)
        cands = self._rng(f"order:{tag}").permutation(cands)
        exact = unit_array(self.seed, "exact_duplicate", cands) < self.exact_duplicate
        near = ~exact & (unit_array(self.seed, "near_duplicate", cands) < self.near_duplicate)
        weight = 1 + (exact | near).astype(np.int64)
        cum = np.cumsum(weight)
        take = int(np.searchsorted(cum, m, side="right"))
        chosen = np.zeros(len(cands), dtype=bool)
        chosen[:take] = True
        filler = np.empty(0, dtype=np.int64)
        if (take and cum[take - 1] == m - 1) or (not take and m == 1):
            # One slot left but the next photo brings its duplicate: use a photo without one,
            # or (every photo duplicated) a photo from the shared pool past this tag's share.
            singles = np.flatnonzero(weight[take:] == 1)
            if len(singles):
                chosen[take + singles[0]] = True
            else:
                j = np.arange(10_000_000 + len(shared), 10_000_000 + len(shared) + 8)
                filler = np.setdiff1d(self._pool_ids(j), cands)[:1]
        own = cands[chosen]
        dups = [
            ID_BASE + DUP_BASE + 2 * (own[mask[chosen]] - ID_BASE) + kind
            for mask, kind in ((exact, 0), (near, 1))
        ]
        return np.unique(np.concatenate([shared, own, filler, *dups]))

    # -- searches ------------------------------------------------------------------------------

    def _media_ids(self, tag: str, media: str) -> np.ndarray:
        """The sorted ids a search with ``media`` sees under ``tag``."""
        if media == "photos":
            return self.tag_ids(tag)
        videos = self.tag_video_ids(tag)
        if media == "videos":
            return videos
        if not len(videos):
            return self.tag_ids(tag)
        # Video ids sort after every photo id, so this is sorted and unique like tag_ids.
        return np.concatenate([self.tag_ids(tag), videos])

    def _base(
        self, tags: tuple[str, ...], exclude: tuple[str, ...], mode: str, media: str = "all"
    ) -> _Base:
        def build() -> _Base:
            sets = [self._media_ids(t, media) for t in tags]
            if mode == "all":
                ids = reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), sets)
            else:
                ids = np.unique(np.concatenate(sets)) if len(sets) > 1 else sets[0]
            for t in exclude:
                ids = np.setdiff1d(ids, self._media_ids(t, media), assume_unique=True)
            dates = dates_of(self.seed, ids)
            order = np.lexsort((ids, dates))
            return _Base(ids=ids[order], dates=dates[order])

        return self._bases.get_or_compute((tags, exclude, mode, media), build)

    def search(self, query: SearchQuery) -> np.ndarray:
        """Every matching photo id, in the query's sort order (uncapped)."""
        return self._results.get_or_compute(query, lambda: self._search(query))

    def _search(self, q: SearchQuery) -> np.ndarray:
        base = self._base(q.tags, q.exclude, q.tag_mode, q.media)
        lo = 0 if q.min_upload is None else np.searchsorted(base.dates, q.min_upload, "left")
        hi = (
            len(base.ids)
            if q.max_upload is None
            else np.searchsorted(base.dates, q.max_upload, "right")
        )
        ids, dates = base.ids[lo:hi], base.dates[lo:hi]
        if q.licenses is not None:
            keep = np.isin(licenses_of(self.seed, ids), np.array(q.licenses, dtype=np.int8))
            ids, dates = ids[keep], dates[keep]
        taken: np.ndarray | None = None
        if q.min_taken is not None or q.max_taken is not None or q.sort.startswith("date-taken"):
            taken = taken_of(self.seed, ids, dates)
            keep = np.ones(len(ids), dtype=bool)
            if q.min_taken is not None:
                keep &= taken >= q.min_taken
            if q.max_taken is not None:
                keep &= taken <= q.max_taken
            ids, dates, taken = ids[keep], dates[keep], taken[keep]
        if q.sort == "date-posted-asc":
            return ids
        if q.sort == "relevance":
            return ids[
                np.argsort(unit_array(self.seed, f"relevance:{q.key()}", ids), kind="stable")
            ]
        if q.sort.startswith("interestingness"):
            order = np.argsort(unit_array(self.seed, "interestingness", ids), kind="stable")
            return ids[order[::-1]] if q.sort.endswith("desc") else ids[order]
        if q.sort.startswith("date-taken") and taken is not None:
            order = np.lexsort((ids, taken))
            return ids[order[::-1]] if q.sort.endswith("desc") else ids[order]
        return ids[::-1]  # date-posted-desc, Flickr's default

    def tags_containing(self, photo_id: int, tags: Iterable[str]) -> list[str]:
        """Which of ``tags`` list ``photo_id``."""
        out = []
        for t in tags:
            ids = self.tag_video_ids(t) if is_video_id(photo_id) else self.tag_ids(t)
            i = int(np.searchsorted(ids, photo_id))
            if i < len(ids) and int(ids[i]) == photo_id:
                out.append(normalize_tag(t))
        return out


# ---------------------------------------------------------------------------------------------
# Pages


def page_bounds(total: int, per_page: int, page: int, cap: int = SEARCH_CAP) -> tuple[int, int]:
    """The [start, stop) slice of the ordered results that page ``page`` shows.

    Like Flickr: nothing past the first ``cap`` results is ever returned; a page that starts at
    or beyond the cap (or beyond the last page) repeats the last page inside the cap, so it is
    never empty while there are results.
    """
    reachable = min(total, cap)
    if reachable == 0:
        return 0, 0
    start = (page - 1) * per_page
    if start >= reachable:
        last_page = math.ceil(reachable / per_page)
        start = (last_page - 1) * per_page
    return start, min(start + per_page, reachable)


def page_with_duplicates(
    ordered: np.ndarray,
    start: int,
    stop: int,
    per_page: int,
    rate: float,
    seed: int,
    identity: str,
) -> list[int]:
    """The page's ids plus, at ``rate`` per item, a repeat of an item of the previous page.

    Flickr pages sometimes repeat photos already seen; the repeats are added, so no photo is
    lost. On the first page the repeat comes from earlier on the same page.
    """
    ids = [int(x) for x in ordered[start:stop]]
    if rate <= 0.0 or not ids:
        return ids
    out: list[int] = []
    prev_start = max(0, start - per_page)
    for offset, pid in enumerate(ids):
        out.append(pid)
        key = f"{identity}|{start + offset}"
        if unit(seed, "page_duplicate", key) < rate:
            if start > 0:
                pick = prev_start + int(
                    unit(seed, "page_duplicate_pick", key) * (start - prev_start)
                )
                out.append(int(ordered[pick]))
            else:
                out.append(ids[int(unit(seed, "page_duplicate_pick", key) * (offset + 1))])
    return out
