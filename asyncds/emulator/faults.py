"""Fault profiles and the deterministic decisions behind every injected fault.

Every decision is a pure function of ``(seed, fault name, identity)``: the same seed always fails
the same requests the same way, so a failing test can be replayed. Transient faults also take
the attempt number of the identical request and never fire from the third attempt on (a
transient ``image_html_200`` only on the first), so a client that retries every transient fault
at least twice (asyncds: 5 retries, but 2 attempts in all for a page served as an image) always
gets through. Permanent faults depend on the photo id only: they are properties of the photo.
Persistent faults (``api_endless``) depend on the request without its attempt number: every
try of that request gets them, so no retry helps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

_MASK64 = (1 << 64) - 1
_TWO64 = float(1 << 64)

# A transient fault fires on at most this many consecutive attempts of one identity.
MAX_TRANSIENT_ATTEMPTS = 2
# Transient faults that fire on the first attempt only: asyncds tries an image that answers with
# a page twice in all (retry.CONTENT_FAULT_ATTEMPTS), so a transient one must clear by then.
FIRST_ATTEMPT_ONLY: frozenset[str] = frozenset({"image_html_200"})


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is stable across processes (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap bijective scrambler of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix64_array(x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`mix64` (uint64 arithmetic wraps, exactly like the masked scalar one)."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_key(seed: int, name: str) -> int:
    """The 64-bit key of one named decision stream under one seed."""
    return stable_hash(f"{seed}\x00{name}")


def unit(seed: int, name: str, key: int | str) -> float:
    """A uniform number in [0, 1) determined by ``(seed, name, key)`` alone."""
    k = stable_hash(key) if isinstance(key, str) else key & _MASK64
    return mix64(stream_key(seed, name) ^ mix64(k)) / _TWO64


def unit_array(seed: int, name: str, keys: np.ndarray) -> np.ndarray:
    """Vectorised :func:`unit` for integer keys; equal to it element by element."""
    stream = np.uint64(stream_key(seed, name))
    mixed = mix64_array(stream ^ mix64_array(keys.astype(np.uint64)))
    # Top 53 bits keep the float exact, as in the scalar division above up to rounding.
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def unit_exact(seed: int, name: str, key: int) -> float:
    """Scalar twin of :func:`unit_array` (same 53-bit rounding) for integer keys."""
    mixed = mix64(stream_key(seed, name) ^ mix64(key & _MASK64))
    return (mixed >> 11) / float(1 << 53)


# Faults answered by the REST endpoint, in the order they are tried for one request.
API_TRANSIENT_FAULTS: tuple[str, ...] = (
    "api_429",
    "api_http_500",
    "api_http_502",
    "api_http_503",
    "api_html_200",
    "api_truncated",
    "api_fail_105",
    "api_fail_201",
)
# Faults answered by the image server per (photo id, size), in the order they are tried.
IMAGE_TRANSIENT_FAULTS: tuple[str, ...] = (
    "image_429",
    "image_http_500",
    "image_http_502",
    "image_http_503",
    "image_html_200",
    "image_truncated",
    "image_stall",
)
# Permanent properties of a photo: its image is gone (404) or replaced by the placeholder.
GONE_FAULTS: tuple[str, ...] = ("image_404", "image_unavailable")
# Permanent properties of a photo's image server: every request of every size answers with a
# page (HTTP 200) or stalls. Checked after GONE_FAULTS; first match wins.
BROKEN_FAULTS: tuple[str, ...] = ("image_html_200_always", "image_stall_always")
# Permanent, valid-but-unusual encodings; a photo has at most one (first match wins).
VARIANT_FAULTS: tuple[str, ...] = ("pixel_bomb", "png_alpha", "cmyk", "progressive", "exif_rotated")
# Permanent catalog-level faults.
CATALOG_FAULTS: tuple[str, ...] = ("exact_duplicate", "near_duplicate", "small", "video")


# What each FaultProfile key does, for `python -m asyncds emulator --help` and the docs.
FAULT_HELP: dict[str, str] = {
    "api_fail_105": "rate of API calls answered stat=fail code 105 (service unavailable)",
    "api_fail_201": "rate of API calls answered stat=fail code 201 (API not available)",
    "api_http_500": "rate of API calls answered HTTP 500",
    "api_http_502": "rate of API calls answered HTTP 502",
    "api_http_503": "rate of API calls answered HTTP 503",
    "api_429": "rate of API calls answered HTTP 429 with Retry-After",
    "api_html_200": "rate of API calls answered with an HTML page and HTTP 200",
    "api_truncated": "rate of API calls whose JSON is cut short",
    "api_endless": "rate of API requests answered with an endless body, on every attempt",
    "api_latency_s": "seconds added to every API answer",
    "rate_limit_per_hour": "API calls a key may make per hour before HTTP 429 (0 = no limit)",
    "retry_after_s": "the Retry-After seconds sent with a 429",
    "image_latency_s": "seconds added to every image answer",
    "image_http_500": "rate of image requests answered HTTP 500 (transient)",
    "image_http_502": "rate of image requests answered HTTP 502 (transient)",
    "image_http_503": "rate of image requests answered HTTP 503 (transient)",
    "image_429": "rate of image requests answered HTTP 429 with Retry-After (transient)",
    "image_truncated": "rate of image bodies cut short (transient)",
    "image_html_200": "rate of image requests answered with an HTML page, HTTP 200 (first try)",
    "image_stall": "rate of image requests that send headers, then stall (transient)",
    "stall_s": "how long a stall lasts, in seconds (at most 300)",
    "image_404": "rate of photos whose image is gone (HTTP 404, permanent)",
    "image_unavailable": "rate of photos redirected to the 'photo unavailable' placeholder",
    "image_html_200_always": "rate of photos always answered with an HTML page (permanent)",
    "image_stall_always": "rate of photos whose image always stalls (permanent)",
    "image_foreign_host": "rate of photos whose URLs point at a host outside Flickr's CDN",
    "exact_duplicate": "rate of photos that are byte copies of an earlier photo",
    "near_duplicate": "rate of photos that are re-encoded, slightly changed copies",
    "cmyk": "rate of photos served as CMYK JPEGs",
    "png_alpha": "rate of photos served as PNGs with transparency",
    "progressive": "rate of photos served as progressive JPEGs",
    "exif_rotated": "rate of photos stored rotated with an EXIF orientation tag",
    "pixel_bomb": "rate of photos whose header claims an enormous pixel count",
    "small": "rate of photos smaller than every asked-for size",
    "video": "rate of extra search results that are videos (left out by media=photos)",
}


@dataclass(frozen=True)
class FaultProfile:
    """How often each fault is injected. Rates are probabilities in [0, 1]; all default to 0."""

    # REST API
    api_fail_105: float = 0.0
    api_fail_201: float = 0.0
    api_http_500: float = 0.0
    api_http_502: float = 0.0
    api_http_503: float = 0.0
    api_429: float = 0.0
    api_html_200: float = 0.0
    api_truncated: float = 0.0
    api_endless: float = 0.0  # persistent: every attempt of the request gets it
    api_latency_s: float = 0.0
    rate_limit_per_hour: int = 0
    retry_after_s: int = 1
    # image CDN, transient
    image_latency_s: float = 0.0
    image_http_500: float = 0.0
    image_http_502: float = 0.0
    image_http_503: float = 0.0
    image_429: float = 0.0
    image_truncated: float = 0.0
    image_html_200: float = 0.0
    image_stall: float = 0.0
    stall_s: float = 5.0
    # image CDN, permanent
    image_404: float = 0.0
    image_unavailable: float = 0.0
    image_html_200_always: float = 0.0
    image_stall_always: float = 0.0
    image_foreign_host: float = 0.0  # its url_* in search answers name server.FOREIGN_IMAGE_HOST
    # photo content, permanent
    exact_duplicate: float = 0.0
    near_duplicate: float = 0.0
    cmyk: float = 0.0
    png_alpha: float = 0.0
    progressive: float = 0.0
    exif_rotated: float = 0.0
    pixel_bomb: float = 0.0
    small: float = 0.0
    # catalog: a video filed beside this many of the photos (searched unless media=photos)
    video: float = 0.0

    # Fields that are not probabilities.
    NON_RATES: ClassVar[frozenset[str]] = frozenset(
        {"api_latency_s", "image_latency_s", "stall_s", "retry_after_s", "rate_limit_per_hour"}
    )
    # Rates all_on() leaves at 0: no retry gets past them, so every run would fail.
    NOT_IN_ALL_ON: ClassVar[frozenset[str]] = frozenset({"api_endless"})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault {f.name!r}: expected a number, got {value!r}")
            if f.name in self.NON_RATES:
                if value < 0:
                    raise ValueError(f"fault {f.name!r}: must be >= 0, got {value!r}")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {f.name!r}: rate must be within 0..1, got {value!r}")
        if self.stall_s > 300:
            raise ValueError(f"fault 'stall_s': a stall is bounded to 300 s, got {self.stall_s}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every profile key, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def rate_names(cls) -> tuple[str, ...]:
        """The profile keys that are probabilities."""
        return tuple(n for n in cls.names() if n not in cls.NON_RATES)

    @classmethod
    def none(cls) -> FaultProfile:
        """A perfect Flickr: nothing injected."""
        return cls()

    @classmethod
    def all_on(cls) -> FaultProfile:
        """Every fault a retrying client survives at a moderate rate, with short latencies and
        stalls (for soak tests); :attr:`NOT_IN_ALL_ON` stays off."""
        return cls(
            api_fail_105=0.03,
            api_fail_201=0.03,
            api_http_500=0.02,
            api_http_502=0.02,
            api_http_503=0.02,
            api_429=0.02,
            api_html_200=0.02,
            api_truncated=0.02,
            api_latency_s=0.01,
            # Flickr's documented limit; a client that respects it never sees this 429.
            rate_limit_per_hour=3600,
            retry_after_s=1,
            image_latency_s=0.01,
            image_http_500=0.02,
            image_http_502=0.02,
            image_http_503=0.02,
            image_429=0.02,
            image_truncated=0.03,
            image_html_200=0.02,
            image_stall=0.02,
            stall_s=2.0,
            image_404=0.03,
            image_unavailable=0.03,
            # Permanent like the two above: a photo dropped for them is replaced, so every count
            # stays reachable. The stall (stall_s) is shorter than a client's default idle
            # timeout, so it is a slow image unless a test sets a shorter one.
            image_html_200_always=0.01,
            image_stall_always=0.01,
            image_foreign_host=0.01,
            exact_duplicate=0.03,
            near_duplicate=0.03,
            cmyk=0.03,
            png_alpha=0.03,
            progressive=0.05,
            exif_rotated=0.03,
            pixel_bomb=0.02,
            small=0.02,
            video=0.03,
        )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> FaultProfile:
        """Build a profile from ``{name: value}``; unknown names raise a ValueError naming them."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"fault profile must be a mapping, got {type(mapping).__name__}")
        known = set(cls.names())
        values: dict[str, Any] = {}
        for raw_key, value in mapping.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ValueError(f"unknown fault {raw_key!r}; valid keys: {', '.join(cls.names())}")
            if key in ("rate_limit_per_hour", "retry_after_s"):
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"fault {raw_key!r}: expected an integer, got {value!r}"
                    ) from None
            values[key] = value
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> FaultProfile:
        """Load a profile from a YAML mapping of fault names to values (empty file = none)."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return cls.from_mapping(data or {})

    def replace(self, **changes: Any) -> FaultProfile:
        """A copy with some values changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float | int]:
        return {n: getattr(self, n) for n in self.names()}


# ---------------------------------------------------------------------------------------------
# Permanent decisions: pure functions of (seed, name, photo id).


def decide_permanent(seed: int, name: str, rate: float, photo_id: int) -> bool:
    return rate > 0.0 and unit_exact(seed, name, photo_id) < rate


def photo_gone(profile: FaultProfile, seed: int, photo_id: int) -> str | None:
    """``"image_404"`` or ``"image_unavailable"`` when the photo's image is gone, else None."""
    for name in GONE_FAULTS:
        if decide_permanent(seed, name, getattr(profile, name), photo_id):
            return name
    return None


def photo_broken(profile: FaultProfile, seed: int, photo_id: int) -> str | None:
    """The fault every request of this photo's image meets (one of BROKEN_FAULTS), or None."""
    for name in BROKEN_FAULTS:
        if decide_permanent(seed, name, getattr(profile, name), photo_id):
            return name
    return None


def photo_on_foreign_host(profile: FaultProfile, seed: int, photo_id: int) -> bool:
    """Whether search answers point this photo's ``url_*`` at a host that is not the CDN's."""
    return decide_permanent(seed, "image_foreign_host", profile.image_foreign_host, photo_id)


def photo_variant(profile: FaultProfile, seed: int, photo_id: int) -> str | None:
    """The unusual encoding this photo is served in (one of VARIANT_FAULTS), or None."""
    for name in VARIANT_FAULTS:
        if decide_permanent(seed, name, getattr(profile, name), photo_id):
            return name
    return None


def decide_persistent(seed: int, name: str, rate: float, identity: str) -> bool:
    """Whether every attempt of request ``identity`` gets fault ``name`` (no attempt number)."""
    return rate > 0.0 and unit(seed, name, identity) < rate


# ---------------------------------------------------------------------------------------------
# Transient decisions: pure functions of (seed, name, identity, attempt).


def transient_fault(
    profile: FaultProfile, seed: int, names: tuple[str, ...], identity: str, attempt: int
) -> str | None:
    """The transient fault (if any) for the ``attempt``-th (0-based) try of ``identity``.

    Attempts from :data:`MAX_TRANSIENT_ATTEMPTS` on always succeed, so a fault never lasts
    longer than two consecutive tries of the same request; those in
    :data:`FIRST_ATTEMPT_ONLY` fire on the first try only.
    """
    if attempt >= MAX_TRANSIENT_ATTEMPTS:
        return None
    key = f"{identity}#{attempt}"
    for name in names:
        rate = getattr(profile, name)
        if attempt and name in FIRST_ATTEMPT_ONLY:
            continue
        if rate > 0.0 and unit(seed, name, key) < rate:
            return name
    return None


class AttemptCounter:
    """Counts tries per identity; thread-safe so sync test helpers may read it."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, identity: str) -> int:
        """Return the 0-based attempt number of this try and count it."""
        with self._lock:
            n = self._counts.get(identity, 0)
            self._counts[identity] = n + 1
            return n

    def get(self, identity: str) -> int:
        with self._lock:
            return self._counts.get(identity, 0)
