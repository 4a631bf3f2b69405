"""The Flickr API client: the one module that knows how Flickr really behaves.

Every quirk from ``flickr-api.md`` lives here and nowhere else:

- errors arrive as HTTP 200 with ``stat: fail``; codes 0/10/105/201 are transient, 100 is a bad
  key, the rest are permanent;
- numbers arrive as ints *or* strings, ``url_*`` extras are simply absent for missing sizes, and
  extra ``url_s`` is the 240 px image (suffix ``_m``) while ``url_m`` is the 500 px one;
- a search returns at most 4,000 results (later pages repeat, ``pages`` past the end still return
  photos, ``total`` is uncapped), so :class:`ClassSearch` slices the upload-date range into
  windows small enough to walk completely, and dedupes by photo id;
- a key is limited to 3,600 calls an hour, so all calls share one leaky-bucket limiter;
- an answer's body is read under a size cap: a broken proxy's endless HTTP 200 once filled
  1.27 GiB before the timeout;
- the API key rides in every request URL, so every log line and exception text is redacted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import aclosing
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import quote

import aiohttp
from aiolimiter import AsyncLimiter
from yarl import URL

from asyncds.config import ClassSpec, FlickrSettings
from asyncds.retry import (
    NO_CONNECTION,
    RetryPolicy,
    TransientError,
    no_connection_reason,
    parse_retry_after,
    retrying,
)

log = logging.getLogger(__name__)

SEARCH_CAP = 4000  # Flickr returns at most the first 4,000 results of any one search query
FLICKR_EPOCH = 1072915200  # 2004-01-01T00:00:00Z: nothing was uploaded to Flickr before this
EXTRAS = "license,owner_name,date_upload,tags,url_s,url_n,url_m,url_z,url_c,url_l,url_o"

AUTH_HELP = (
    "set API_KEY (export API_KEY=...) — get a key at https://www.flickr.com/services/apps/create/"
    " — or try --emulator"
)
# The key is set but Flickr refused it: a typo, the secret in its place, or a revoked app.
REJECTED_KEY_HELP = (
    "Flickr rejected the key in API_KEY: check that it holds the app's key (not its secret) as "
    "listed at https://www.flickr.com/services/apps/by/me — or try --emulator"
)

# stat=fail codes worth another try: 10/105 "not currently available", 201 (also seen as 0)
# "API service is not currently available".
TRANSIENT_CODES = frozenset({0, 10, 105, 201})
AUTH_CODE = 100
NOT_A_FLICKR_CODE = -1  # FlickrError.code for faults that are not API errors (HTTP status, shape)

# A 500-photo search page with our extras is about 0.4 MB; a body past 4 MB is no Flickr answer
# (an endless 200 from a broken proxy was once buffered to 1.27 GiB), so reading stops there.
MAX_ANSWER_MB = 4
MAX_ANSWER_BYTES = MAX_ANSWER_MB * 1024 * 1024
_CHUNK_BYTES = 64 * 1024

# License ids as of the 2025-06 renaming (flickr-api.md §5); keyed on the id, never the name.
LICENSES: dict[int, str] = {
    0: "All Rights Reserved",
    1: "CC BY-NC-SA 2.0",
    2: "CC BY-NC 2.0",
    3: "CC BY-NC-ND 2.0",
    4: "CC BY 2.0",
    5: "CC BY-SA 2.0",
    6: "CC BY-ND 2.0",
    7: "No known copyright restrictions",
    8: "United States Government Work",
    9: "Public Domain Dedication (CC0)",
    10: "Public Domain Mark",
    11: "CC BY 4.0",
    12: "CC BY-SA 4.0",
    13: "CC BY-ND 4.0",
    14: "CC BY-NC 4.0",
    15: "CC BY-NC-SA 4.0",
    16: "CC BY-NC-ND 4.0",
}


# -- redaction ------------------------------------------------------------------------------

_SECRET_NAMES = (
    "api_key",
    "api_secret",
    "oauth_consumer_key",
    "oauth_signature",
    "oauth_token_secret",
    "oauth_token",
)
# name, then `=`, `:` or an encoded `=` (optionally quoted: JSON, OAuth headers), then the value.
# A value must start like a real credential (hex key, base64 signature, %-escape), so help texts
# such as "export API_KEY=..." keep their placeholder.
_SECRET_RE = re.compile(
    r"(?<![A-Za-z0-9_])(?P<name>" + "|".join(_SECRET_NAMES) + r")"
    r"(?P<sep>[\"']?\s*(?:=|:|%3D)\s*[\"']?)"
    r"(?P<value>[A-Za-z0-9%+/_-][^\s&\"',;}\])<>]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the values of API keys, secrets, signatures and tokens replaced by REDACTED.

    Covers query strings and form bodies (``api_key=...``), JSON-ish (``"api_key": "..."``) and
    OAuth header (``oauth_consumer_key="..."``) forms.
    """
    return _SECRET_RE.sub(lambda m: f"{m['name']}{m['sep']}REDACTED", text)


# -- errors ---------------------------------------------------------------------------------


class FlickrError(Exception):
    """A permanent Flickr fault: ``code`` is the API error code (or -1 for HTTP/shape faults)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = redact(message)  # defence in depth; the client also strips its own key
        super().__init__(self.code, self.message)

    def __str__(self) -> str:
        return f"Flickr error {self.code}: {self.message}"


class FlickrAuthError(FlickrError):
    """The API key is missing or rejected (code 100); the message says how to fix it."""


class FlickrUnavailableError(FlickrError):
    """Transient faults persisted through every retry; ``code`` is the last API code, if any."""


class FlickrUnreachableError(FlickrUnavailableError):
    """No connection to the API's host could be made (refused, DNS, connect timeout)."""

    def __str__(self) -> str:
        return self.message


class _TransientFlickrError(TransientError):
    """A retryable fault, remembering the API code (if any) for the final error."""

    def __init__(
        self,
        message: str,
        *,
        code: int = NOT_A_FLICKR_CODE,
        retry_after: float | None = None,
        unreachable: str = "",
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = code
        self.unreachable = unreachable  # "host:port" when no connection could be made


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One photo found for a class, with what the download and the attribution need."""

    photo_id: str
    label: str
    url: str
    width: int
    height: int
    owner: str
    ownername: str
    title: str
    license: int
    date_upload: int

    @property
    def photo_page(self) -> str:
        # The NSID form always works; Flickr asks apps to link here, not to the image.
        return f"https://www.flickr.com/photos/{self.owner}/{self.photo_id}"


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One parsed ``flickr.photos.search`` page. ``total``/``pages`` are Flickr's (uncapped)."""

    page: int
    pages: int
    perpage: int
    total: int
    photos: list[dict[str, Any]]

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> SearchPage:
        body = data.get("photos")
        if not isinstance(body, Mapping):
            raise FlickrError(NOT_A_FLICKR_CODE, "search response has no 'photos' object")
        photos = body.get("photo") or []
        if isinstance(photos, Mapping):  # XML-to-JSON converters collapse a single item
            photos = [photos]
        total = _as_int(body.get("total")) or 0
        perpage = _as_int(body.get("perpage", body.get("per_page"))) or 0
        pages = _as_int(body.get("pages"))
        if pages is None:  # not seen from Flickr, but cheap to survive
            pages = math.ceil(total / perpage) if perpage else int(total > 0)
        return cls(
            page=_as_int(body.get("page")) or 1,
            pages=pages,
            perpage=perpage,
            total=total,
            photos=[p for p in photos if isinstance(p, Mapping)],
        )


def _as_int(value: Any) -> int | None:
    """Flickr sends numbers as ints or strings ("206004", "180"); None when absent or junk."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):
        return None


def _as_text(value: Any) -> str:
    if isinstance(value, Mapping):  # e.g. description/title as {"_content": "..."}
        value = value.get("_content", "")
    return "" if value is None else str(value)


# -- size choice ----------------------------------------------------------------------------

# extras key -> nominal longest side (flickr-api.md §3). Beware: url_s is the 240 px size (suffix
# _m) and url_m the 500 px one (no suffix). The originals' size is unknown until Flickr says so.
_SIZES: tuple[tuple[str, float], ...] = (
    ("url_s", 240),
    ("url_n", 320),
    ("url_m", 500),
    ("url_z", 640),
    ("url_c", 800),
    ("url_l", 1024),
    ("url_o", math.inf),
)
_LAST_RESORT = ("url_t", 100)  # 100 px; url_sq/url_q are square crops and never used


def choose_size(photo: Mapping[str, Any], max_side: int) -> tuple[str, int, int] | None:
    """``(url, width, height)`` of the smallest size whose longest side is >= ``max_side``.

    Falls back to the largest size there is, then to ``url_t``; None when the photo has no url.
    A size without dimensions counts as its nominal size; its width/height are reported as the
    nominal longest side (0 for an original of unknown size).
    """
    found: list[tuple[float, int, str, int, int]] = []
    for rank, (key, nominal) in enumerate(_SIZES):
        entry = _size_entry(photo, key, nominal)
        if entry is not None:
            found.append((entry[0], rank, *entry[1:]))
    if not found:
        key, nominal = _LAST_RESORT
        entry = _size_entry(photo, key, nominal)
        return None if entry is None else entry[1:]
    big_enough = [f for f in found if f[0] >= max_side]
    _, _, url, width, height = min(big_enough) if big_enough else max(found)
    return url, width, height


def _size_entry(
    photo: Mapping[str, Any], key: str, nominal: float
) -> tuple[float, str, int, int] | None:
    url = photo.get(key)
    if not url or not isinstance(url, str):
        return None
    suffix = key.removeprefix("url_")
    width, height = _as_int(photo.get(f"width_{suffix}")), _as_int(photo.get(f"height_{suffix}"))
    if width and height:
        return float(max(width, height)), url, width, height
    side = 0 if math.isinf(nominal) else int(nominal)
    return nominal, url, width or side, height or side


def candidate_from_photo(photo: Mapping[str, Any], label: str, max_side: int) -> Candidate | None:
    """A :class:`Candidate` from one search-result photo; None without an id or any image url."""
    photo_id = _as_text(photo.get("id")).strip()
    size = choose_size(photo, max_side) if photo_id else None
    if size is None:
        return None
    url, width, height = size
    license_id = _as_int(photo.get("license"))
    return Candidate(
        photo_id=photo_id,
        label=label,
        url=url,
        width=width,
        height=height,
        owner=_as_text(photo.get("owner")),
        ownername=_as_text(photo.get("ownername")),
        title=_as_text(photo.get("title")),
        # No license extra means no known permission: All Rights Reserved is the safe reading.
        license=0 if license_id is None else license_id,
        date_upload=_as_int(photo.get("dateupload")) or 0,
    )


# -- the client -----------------------------------------------------------------------------


def limiter_parameters(calls_per_hour: float) -> tuple[int, float]:
    """``(burst, rate per second)`` for a leaky bucket that honours ``calls_per_hour``.

    A leaky bucket of capacity b draining at r/s admits at most b + 60·r calls in any 60 s
    window (the bucket can be empty when the window opens, then refills at r). Choosing
    b = max(1, min(10, per_minute // 10)) and r = (per_minute - b) / 60 makes that bound exactly
    per_minute = calls_per_hour / 60, so no minute — and hence no hour — exceeds the budget,
    while a few calls may still start back to back. A budget of at most one call a minute leaves
    no room for that rule (any b >= 1 fills the minute); it falls back to b = 1 and
    r = (calls_per_hour - 1) / 3600, which still keeps every hour within the budget.
    """
    if calls_per_hour <= 0:
        raise ValueError(f"calls_per_hour must be positive, got {calls_per_hour}")
    per_minute = calls_per_hour / 60
    burst = max(1, min(10, int(per_minute // 10)))
    rate = (per_minute - burst) / 60
    if rate <= 0:
        return 1, max(calls_per_hour - 1, 1) / 3600
    return burst, rate


class FlickrClient:
    """Calls the Flickr REST API: rate-limited, retried, errors classified, secrets redacted.

    One client (hence one limiter) is shared by every producer that uses the same key.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        api_key: str,
        calls_per_hour: int,
        retry: RetryPolicy,
        timeout_s: float = 30.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._session = session
        self._api_url = api_url
        try:
            self._api_authority = URL(api_url).authority or api_url
        except (ValueError, TypeError):
            self._api_authority = api_url
        self._api_key = api_key or ""
        self._retry = retry
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_answer_bytes = max_answer_bytes
        self.calls_per_hour = calls_per_hour
        self.burst, self.rate_per_s = limiter_parameters(calls_per_hour)
        # The most calls any 60-second window can see (== calls_per_hour / 60 when it allows).
        self.max_calls_per_minute = self.burst + 60 * self.rate_per_s
        self.limiter = AsyncLimiter(self.burst, self.burst / self.rate_per_s)
        self.calls = 0  # HTTP requests actually sent, retries included

    def __repr__(self) -> str:
        return self.redact(
            f"FlickrClient(api_url={self._api_url!r}, calls={self.calls}, "
            f"burst={self.burst}, rate_per_s={self.rate_per_s:.3f})"
        )

    def redact(self, text: str) -> str:
        """:func:`redact`, plus this client's own key wherever its literal value appears."""
        text = redact(text)
        if self._api_key:
            for form in {self._api_key, quote(self._api_key, safe="")}:
                text = text.replace(form, "REDACTED")
        return text

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call ``method`` with ``params``; the parsed ``stat: ok`` response.

        Raises :class:`FlickrAuthError` (no key / rejected key), :class:`FlickrError` (other
        permanent faults) or :class:`FlickrUnavailableError` (transient faults outlived retries).
        """
        if not self._api_key:
            raise FlickrAuthError(AUTH_CODE, f"no Flickr API key: {AUTH_HELP}")
        query = {
            "method": method,
            "api_key": self._api_key,
            "format": "json",
            "nojsoncallback": "1",
            **{k: _param(v) for k, v in params.items() if v is not None},
        }
        try:
            return await retrying(self._retry)(self._attempt, method, query)
        except _TransientFlickrError as exc:
            attempts = self._retry.retries + 1
            if exc.unreachable:
                raise FlickrUnreachableError(
                    exc.code,
                    f"the Flickr API at {exc.unreachable} cannot be reached ({exc}; gave up after "
                    f"{attempts} attempts): check the network connection",
                ) from None
            raise FlickrUnavailableError(
                exc.code, f"{method}: gave up after {attempts} attempts: {exc}"
            ) from exc

    async def search(self, params: Mapping[str, Any], page: int) -> SearchPage:
        """One ``flickr.photos.search`` page."""
        data = await self.call("flickr.photos.search", **params, page=page)
        return SearchPage.from_response(data)

    async def _attempt(self, method: str, query: dict[str, str]) -> dict[str, Any]:
        await self.limiter.acquire()  # every HTTP attempt, retries included, spends budget
        self.calls += 1
        log.debug("GET %s %s", method, self._describe(query))
        try:
            async with self._session.get(
                self._api_url, params=query, timeout=self._timeout
            ) as resp:
                status, reason = resp.status, resp.reason or ""
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if status != 200:  # the body of an error answer is never used: leave it unread
                    raise self._status_error(method, status, reason, retry_after)
                body = await self._read_capped(method, resp)
        except NO_CONNECTION as exc:
            raise _TransientFlickrError(
                no_connection_reason(exc), unreachable=self._api_authority
            ) from None
        except TimeoutError:
            raise _TransientFlickrError(f"{method}: timed out") from None
        except aiohttp.InvalidURL:
            # `from None`: aiohttp's exceptions print the full request URL, key included.
            raise FlickrError(
                NOT_A_FLICKR_CODE, self.redact(f"{method}: invalid API url {self._api_url!r}")
            ) from None
        except aiohttp.ClientResponseError as exc:
            raise self._status_error(method, exc.status, exc.message or "", None) from None
        except aiohttp.ClientError as exc:
            raise _TransientFlickrError(
                self.redact(f"{method}: {type(exc).__name__}: {exc}")
            ) from None
        return self._parse(method, body, retry_after)

    async def _read_capped(self, method: str, resp: aiohttp.ClientResponse) -> bytearray:
        """The body, read in chunks; an answer over the cap is dropped as soon as it shows.

        Retried like the other malformed answers (HTML, truncated JSON): a proxy that went wrong
        may recover, and the retries are bounded anyway.
        """
        cap = self._max_answer_bytes
        declared = resp.content_length
        if declared is not None and declared > cap:
            resp.close()  # drop the connection rather than drain a body we will not keep
            raise self._oversized(method, f"Content-Length {declared}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > cap:
                read = len(body)
                del body  # the error's traceback holds this frame: let it not hold 4 MB
                resp.close()
                raise self._oversized(method, f"stopped reading after {read} bytes")
        return body

    def _oversized(self, method: str, detail: str) -> _TransientFlickrError:
        cap = self._max_answer_bytes
        size = f"{cap / (1024 * 1024):g} MB" if cap >= 1024 * 1024 else f"{cap} bytes"
        return _TransientFlickrError(
            self.redact(
                f"Flickr's answer to {method} exceeded {size} ({detail}); real answers are "
                "well under 1 MB, so a proxy or the server is misbehaving"
            )
        )

    def _status_error(
        self, method: str, status: int, reason: str, retry_after: float | None
    ) -> Exception:
        """429 and 5xx are worth retrying (with the server's Retry-After); other codes are not."""
        text = self.redact(f"{method}: HTTP {status} {reason}".rstrip())
        if status == 429 or status >= 500:
            return _TransientFlickrError(text, retry_after=retry_after)
        return FlickrError(NOT_A_FLICKR_CODE, text)

    def _parse(
        self, method: str, body: bytes | bytearray, retry_after: float | None
    ) -> dict[str, Any]:
        text = body.decode("utf-8", errors="replace").strip()
        # Without nojsoncallback Flickr wraps JSON as JSONP: jsonFlickrApi({...})
        if text.startswith("jsonFlickrApi(") and text.endswith(")"):
            text = text[len("jsonFlickrApi(") : -1]
        try:
            data = json.loads(text)
        except ValueError:
            # HTML error pages served with 200, truncated bodies: Flickr's own client retries.
            snippet = self.redact(text[:80])
            raise _TransientFlickrError(
                f"{method}: response is not JSON ({len(body)} bytes: {snippet!r})",
                retry_after=retry_after,
            ) from None
        if not isinstance(data, dict) or "stat" not in data:
            raise _TransientFlickrError(f"{method}: response has no 'stat'") from None
        if data["stat"] == "ok":
            return data
        code = _as_int(data.get("code"))
        code = NOT_A_FLICKR_CODE if code is None else code
        message = self.redact(f"{method}: {_as_text(data.get('message')) or 'failed'}")
        if code == AUTH_CODE:
            raise FlickrAuthError(code, f"{message} — {REJECTED_KEY_HELP}")
        if code in TRANSIENT_CODES:
            raise _TransientFlickrError(f"{message} (code {code})", code=code)
        raise FlickrError(code, message)

    def _describe(self, query: Mapping[str, str]) -> str:
        shown = {k: v for k, v in query.items() if k not in ("method", "format", "nojsoncallback")}
        return self.redact(" ".join(f"{k}={v}" for k, v in shown.items()))


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


async def license_names(client: FlickrClient) -> dict[int, str]:
    """License id -> name from ``flickr.photos.licenses.getInfo``, over the built-in table.

    An auth error propagates; any other failure falls back to :data:`LICENSES`.
    """
    names = dict(LICENSES)
    try:
        data = await client.call("flickr.photos.licenses.getInfo")
    except FlickrAuthError:
        raise
    except FlickrError as exc:
        log.warning("license names unavailable (%s); using the built-in table", exc)
        return names
    entries = (data.get("licenses") or {}).get("license") or []
    if isinstance(entries, Mapping):
        entries = [entries]
    for entry in entries:
        license_id = _as_int(entry.get("id")) if isinstance(entry, Mapping) else None
        if license_id is not None and entry.get("name"):
            names[license_id] = _as_text(entry["name"])
    return names


# -- searching past the 4,000 cap -----------------------------------------------------------

Window = tuple[int, int]  # inclusive [min_upload_date, max_upload_date], unix seconds


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """Where a class's search stands; immutable, so every yielded cursor is a snapshot.

    ``pending`` is a stack of windows still to search (the last is next). ``window`` is the one
    being walked, ``page`` the next page to fetch in it and ``last_page`` the page to stop at
    (0 = unknown until page 1 is read). ``total`` is Flickr's uncapped match count for the whole
    range, from the first response.
    """

    pending: tuple[Window, ...] = ()
    window: Window | None = None
    page: int = 1
    last_page: int = 0
    per_page: int = 0
    total: int = 0
    exhausted: bool = False

    @classmethod
    def start(cls, start: int, end: int) -> SearchCursor:
        return cls(pending=((start, end),))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SearchCursor:
        raw = json.loads(text)
        try:
            window = raw.get("window")
            return cls(
                pending=tuple((int(lo), int(hi)) for lo, hi in raw.get("pending", ())),
                window=None if window is None else (int(window[0]), int(window[1])),
                page=int(raw.get("page", 1)),
                last_page=int(raw.get("last_page", 0)),
                per_page=int(raw.get("per_page", 0)),
                total=int(raw.get("total", 0)),
                exhausted=bool(raw.get("exhausted", False)),
            )
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not a search cursor: {text[:80]!r}") from exc


@dataclass(frozen=True, slots=True)
class PageResult:
    """New distinct candidates from one request, and the cursor to resume *after* it."""

    candidates: list[Candidate]
    cursor: SearchCursor
    total: int


class ClassSearch:
    """Every photo Flickr has for one class, past the 4,000-result cap, deduplicated.

    The upload-date range is a stack of windows. Page 1 of a window tells its ``total``; a window
    with more than 4,000 matches is halved (its page-1 photos are still used), otherwise its pages
    are walked up to ``pages`` or the cap — never further, since pages past either still return
    (repeated) photos. Newer halves are walked first.

    Repeats (a last partial page, a photo listed in two windows) are skipped with a set of
    every id yielded, preseeded with ``seen_ids``. With ``dedupe=False`` they are left to the
    caller: the pipeline stores candidates under a (class, photo id) key that skips them, so
    a class of 50,000 images needs no set of 50,000 ids in memory too.
    """

    def __init__(
        self,
        client: FlickrClient,
        spec: ClassSpec,
        settings: FlickrSettings,
        *,
        max_side: int,
        cursor: SearchCursor | None = None,
        start: int = FLICKR_EPOCH,
        end: int | None = None,
        seen_ids: Iterable[str] | None = None,
        dedupe: bool = True,
    ) -> None:
        self._client = client
        self._spec = spec
        self._max_side = max_side
        self._per_page = max(1, settings.per_page)
        # Pages that can hold the first 4,000 results; a last partial page may repeat a few,
        # which dedupe absorbs (for per_page dividing 4,000 this is exactly 4000 // per_page).
        self._page_cap = max(1, math.ceil(SEARCH_CAP / self._per_page))
        self._seen: set[str] | None = set(seen_ids or ()) if dedupe else None
        self.found = 0  # candidates yielded (distinct when deduplicating)
        self._params: dict[str, Any] = {
            # A class without tags searches for its name (a parameterless search is error 3).
            "tags": ",".join(spec.tags or (spec.name,)),
            "tag_mode": spec.tag_mode,
            "per_page": self._per_page,
            "sort": settings.sort,
            "safe_search": settings.safe_search,
            "media": settings.media,  # Flickr's default (all) would return videos too
            "extras": EXTRAS,
        }
        if settings.license:
            self._params["license"] = ",".join(str(i) for i in settings.license)
        if cursor is None:
            # The search ends at the start of today (UTC), not "now": two runs on one day then
            # walk the same date windows in the same order and pick the same images (a resumed
            # run keeps its cursor's windows anyway). Today's uploads are left for tomorrow.
            if end is None:
                end = int(time.time()) // 86400 * 86400
            cursor = SearchCursor.start(start, end)
        if cursor.window is not None and cursor.per_page not in (0, self._per_page):
            # Page numbers mean other offsets now: walk the window again (dedupe skips repeats).
            log.info("%s: per_page changed; restarting the current date window", spec.name)
            cursor = replace(cursor, page=1, last_page=0)
        self.cursor = replace(cursor, per_page=self._per_page)

    async def pages(self) -> AsyncIterator[PageResult]:
        """One :class:`PageResult` per request; the last one has ``cursor.exhausted`` set."""
        label = self._spec.name
        cur = self.cursor
        while not cur.exhausted:
            if cur.window is None:
                if not cur.pending:
                    cur = self.cursor = replace(cur, exhausted=True)
                    log.info("%s: search exhausted (%d photos found)", label, self.found)
                    yield PageResult([], cur, cur.total)
                    return
                cur = replace(
                    cur, pending=cur.pending[:-1], window=cur.pending[-1], page=1, last_page=0
                )
            assert cur.window is not None
            lo, hi = cur.window
            params = {**self._params, "min_upload_date": lo, "max_upload_date": hi}
            result = await self._client.search(params, cur.page)
            if cur.total == 0 and result.total:
                cur = replace(cur, total=result.total)
                log.info("%s: Flickr reports %d matches", label, result.total)
            candidates = self._new_candidates(result.photos)
            cur = self._advance(cur, result)
            self.cursor = cur
            # The page's parsed JSON (about 2 MB for 500 photos) must not stay alive in this
            # suspended frame while the producer enqueues its candidates: one per class adds up.
            del result
            yield PageResult(candidates, cur, cur.total)
        yield PageResult([], cur, cur.total)  # resumed from an exhausted cursor

    def _advance(self, cur: SearchCursor, result: SearchPage) -> SearchCursor:
        """The cursor after ``result`` (page ``cur.page`` of ``cur.window``) was read."""
        assert cur.window is not None
        lo, hi = cur.window
        label = self._spec.name
        if cur.page == 1 or cur.last_page == 0:
            honoured = _window_honoured(result.photos, lo, hi)
            if result.total > SEARCH_CAP and hi > lo and honoured:
                # Disjoint integer halves: bounds are inclusive and dates whole seconds, so
                # [lo, mid] + [mid+1, hi] covers the window exactly. Newer half on top.
                mid = (lo + hi) // 2
                log.debug("%s: window %d..%d has %d matches; halving", label, lo, hi, result.total)
                return replace(cur, pending=(*cur.pending, (lo, mid), (mid + 1, hi)), window=None)
            if result.total > SEARCH_CAP and not honoured:
                # Halving would recurse down to single seconds without shrinking anything.
                log.warning(
                    "%s: the API ignores upload-date windows (photos outside %d..%d); walking "
                    "only the first %d of %d matches",
                    label,
                    lo,
                    hi,
                    SEARCH_CAP,
                    result.total,
                )
            elif result.total > SEARCH_CAP:
                log.warning(
                    "%s: %d photos were uploaded in the one second %d; Flickr shows only the "
                    "first %d of them",
                    label,
                    result.total,
                    lo,
                    SEARCH_CAP,
                )
            cur = replace(cur, last_page=max(1, min(result.pages, self._page_cap)))
        log.debug(
            "%s: window %d..%d page %d/%d (%d photos, %d found so far)",
            label,
            lo,
            hi,
            cur.page,
            cur.last_page,
            len(result.photos),
            self.found,
        )
        # Stop at last_page or Flickr's current `pages`; never wait for an empty page.
        if cur.page >= cur.last_page or cur.page >= result.pages or not result.photos:
            return replace(cur, window=None, page=1, last_page=0)
        return replace(cur, page=cur.page + 1)

    def _new_candidates(self, photos: Iterable[Mapping[str, Any]]) -> list[Candidate]:
        fresh: list[Candidate] = []
        seen = self._seen
        for photo in photos:
            candidate = candidate_from_photo(photo, self._spec.name, self._max_side)
            if candidate is None:
                continue
            if seen is not None:
                if candidate.photo_id in seen:
                    continue
                seen.add(candidate.photo_id)
            fresh.append(candidate)
        self.found += len(fresh)
        return fresh


def _window_honoured(photos: Iterable[Mapping[str, Any]], lo: int, hi: int) -> bool:
    """False when most photos' upload dates fall outside the window they were searched in.

    A server that ignores min/max_upload_date (a proxy, an incomplete emulator) would otherwise
    make every window look over-full. Without dates to check, assume the window is honoured.
    """
    dates = [d for d in (_as_int(p.get("dateupload")) for p in photos) if d is not None]
    outside = sum(1 for d in dates if not lo <= d <= hi)
    return outside * 2 <= len(dates)


async def collect_candidates(
    client: FlickrClient,
    spec: ClassSpec,
    settings: FlickrSettings,
    *,
    max_side: int,
    limit: int,
    start: int = FLICKR_EPOCH,
    end: int | None = None,
    exclude: Collection[str] = (),
) -> list[Candidate]:
    """Up to ``limit`` distinct candidates, fetching no page after the limit is reached.
    Photo ids in ``exclude`` (the config's exclude list) are skipped."""
    found: list[Candidate] = []
    if limit <= 0:
        return found
    search = ClassSearch(client, spec, settings, max_side=max_side, start=start, end=end)
    async with aclosing(search.pages()) as results:
        async for result in results:
            wanted = [c for c in result.candidates if c.photo_id not in exclude]
            found.extend(wanted[: limit - len(found)])
            if len(found) >= limit:
                break
    return found


__all__ = [
    "AUTH_HELP",
    "EXTRAS",
    "LICENSES",
    "MAX_ANSWER_BYTES",
    "MAX_ANSWER_MB",
    "SEARCH_CAP",
    "Candidate",
    "ClassSearch",
    "FlickrAuthError",
    "FlickrClient",
    "FlickrError",
    "FlickrUnavailableError",
    "FlickrUnreachableError",
    "PageResult",
    "SearchCursor",
    "SearchPage",
    "candidate_from_photo",
    "choose_size",
    "collect_candidates",
    "license_names",
    "limiter_parameters",
    "redact",
]
