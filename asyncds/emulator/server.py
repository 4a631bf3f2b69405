"""The Flickr-compatible aiohttp server: the REST API and the image CDN on one port.

REST: ``/services/rest/`` (and without the slash), GET or form POST, key from ``api_key`` or
OAuth. CDN: ``/{server}/{id}_{secret}[_{suffix}].jpg`` and the "photo unavailable" placeholder.
Faults are injected per :class:`FaultProfile`; what happened is counted in
:class:`EmulatorStats`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlencode

from aiohttp import web

from .catalog import (
    MEDIA,
    SIZE_BY_EXTRA,
    SIZE_BY_SUFFIX,
    SIZES,
    SORTS,
    Catalog,
    PhotoInfo,
    SearchQuery,
    normalize_tag,
    page_bounds,
    page_with_duplicates,
    parse_photo_id,
    size_dims,
)
from .faults import (
    API_TRANSIENT_FAULTS,
    IMAGE_TRANSIENT_FAULTS,
    AttemptCounter,
    FaultProfile,
    decide_persistent,
    photo_broken,
    photo_gone,
    photo_on_foreign_host,
    photo_variant,
    transient_fault,
    unit,
)
from .images import ImageCache, RenderSpec, placeholder_png

log = logging.getLogger(__name__)

EMULATOR_API_KEY = "emulator-key"
EMULATOR_API_SECRET = "emulator-secret"
REST_PATH = "/services/rest/"
PLACEHOLDER_PATH = "/pw/images/en-us/photo_unavailable.png"
PLACEHOLDER_L_PATH = "/pw/images/en-us/photo_unavailable_l.png"
MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 100
MAX_ALL_TAGS = 20
# Where the image_foreign_host fault points a photo's url_*: a reserved name that never resolves
# (RFC 2606), so a client that asks it anyway sees a network error, never an image.
FOREIGN_IMAGE_HOST = "images.foreign.invalid"
# What fault api_endless sends at most: a client without a size cap still sees an end.
ENDLESS_LIMIT_BYTES = 1 << 30

# Parameters that authenticate a call rather than say what it asks for.
AUTH_PARAMS = frozenset(
    {
        "api_key",
        "api_sig",
        "auth_token",
        "oauth_callback",
        "oauth_consumer_key",
        "oauth_nonce",
        "oauth_signature",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_token",
        "oauth_verifier",
        "oauth_version",
    }
)

# flickr.photos.licenses.getInfo as recorded on 2025-06-19, deliberately not in id order.
_CC = "https://creativecommons.org/licenses/"
LICENSES: dict[int, tuple[str, str]] = {
    0: (
        "All Rights Reserved",
        "https://www.flickrhelp.com/hc/en-us/articles/"
        "10710266545556-Using-Flickr-images-shared-by-other-members",
    ),
    1: ("CC BY-NC-SA 2.0", _CC + "by-nc-sa/2.0/"),
    2: ("CC BY-NC 2.0", _CC + "by-nc/2.0/"),
    3: ("CC BY-NC-ND 2.0", _CC + "by-nc-nd/2.0/"),
    4: ("CC BY 2.0", _CC + "by/2.0/"),
    5: ("CC BY-SA 2.0", _CC + "by-sa/2.0/"),
    6: ("CC BY-ND 2.0", _CC + "by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("United States Government Work", "https://www.usa.gov/government-copyright"),
    9: ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
    11: ("CC BY 4.0", _CC + "by/4.0/"),
    12: ("CC BY-SA 4.0", _CC + "by-sa/4.0/"),
    13: ("CC BY-ND 4.0", _CC + "by-nd/4.0/"),
    14: ("CC BY-NC 4.0", _CC + "by-nc/4.0/"),
    15: ("CC BY-NC-SA 4.0", _CC + "by-nc-sa/4.0/"),
    16: ("CC BY-NC-ND 4.0", _CC + "by-nc-nd/4.0/"),
}
LICENSE_ORDER = (2, 9, 3, 14, 0, 12, 8, 1, 15, 6, 11, 4, 16, 7, 13, 10, 5)

_IMAGE_NAME = re.compile(r"^(\d{11})_([0-9a-f]{10})(?:_([a-z0-9]+))?\.(jpg|jpeg|png|gif)$")
_OAUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')
_HTML_ERROR = "<html><head><title>{0}</title></head><body><h1>{0}</h1></body></html>\n"


@dataclass(frozen=True)
class EmulatorSettings:
    """Everything that shapes the emulator; with the same settings it answers the same way."""

    seed: int = 0
    tag_sizes: Mapping[str, int] = field(default_factory=dict)
    default_tag_size: int = 6000
    shared_fraction: float = 0.01
    page_duplicate_rate: float = 0.0
    api_key: str = EMULATOR_API_KEY
    api_secret: str = EMULATOR_API_SECRET
    faults: FaultProfile = field(default_factory=FaultProfile.none)

    def __post_init__(self) -> None:
        if not 0.0 <= self.page_duplicate_rate <= 1.0:
            raise ValueError(f"page_duplicate_rate must be within 0..1: {self.page_duplicate_rate}")
        if not 0.0 <= self.shared_fraction <= 1.0:
            raise ValueError(f"shared_fraction must be within 0..1: {self.shared_fraction}")
        if self.default_tag_size < 0:
            raise ValueError(f"default_tag_size must be >= 0: {self.default_tag_size}")

    def make_catalog(self) -> Catalog:
        return Catalog(
            seed=self.seed,
            tag_sizes=self.tag_sizes,
            default_tag_size=self.default_tag_size,
            shared_fraction=self.shared_fraction,
            exact_duplicate=self.faults.exact_duplicate,
            near_duplicate=self.faults.near_duplicate,
            small=self.faults.small,
            video=self.faults.video,
        )


class EmulatorStats:
    """What the emulator saw and did; thread-safe, so sync tests can read it while it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.api_calls: dict[str, list[float]] = {}  # key -> monotonic time of every REST call
        self.api_methods: Counter[str] = Counter()
        self.image_requests: Counter[str] = Counter()  # request path -> times requested
        self.faults: Counter[str] = Counter()  # injected fault name -> times
        self.photo_ids_served: Counter[str] = Counter()  # id -> complete image bodies sent
        self.photo_ids_returned: set[str] = set()  # ids that appeared in search results
        self.placeholder_redirects = 0  # includes sizes a photo does not have
        self.images_served = 0

    def record_api(self, key: str, method: str) -> None:
        with self._lock:
            self.api_calls.setdefault(key, []).append(time.monotonic())
            self.api_methods[method] += 1

    def record_image_request(self, path: str) -> None:
        with self._lock:
            self.image_requests[path] += 1

    def record_fault(self, name: str) -> None:
        with self._lock:
            self.faults[name] += 1

    def record_served(self, photo_id: str) -> None:
        with self._lock:
            self.photo_ids_served[photo_id] += 1
            self.images_served += 1

    def record_returned(self, ids: list[str]) -> None:
        with self._lock:
            self.photo_ids_returned.update(ids)

    def record_redirect(self) -> None:
        with self._lock:
            self.placeholder_redirects += 1

    @property
    def total_api_calls(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.api_calls.values())

    @property
    def total_image_requests(self) -> int:
        with self._lock:
            return sum(self.image_requests.values())

    def repeated_image_requests(self) -> dict[str, int]:
        """Image paths requested more than once (retries included)."""
        with self._lock:
            return {p: n for p, n in self.image_requests.items() if n > 1}

    def max_calls_in_window(self, seconds: float, key: str | None = None) -> int:
        """The most REST calls (of ``key``, or of all keys) inside any ``seconds``-long window."""
        with self._lock:
            if key is None:
                stamps = sorted(t for v in self.api_calls.values() for t in v)
            else:
                stamps = sorted(self.api_calls.get(key, []))
        best, lo = 0, 0
        for hi, t in enumerate(stamps):
            while t - stamps[lo] >= seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        with self._lock:
            return {
                "api_calls": {k: len(v) for k, v in self.api_calls.items()},
                "api_methods": dict(self.api_methods),
                "image_requests": sum(self.image_requests.values()),
                "distinct_image_paths": len(self.image_requests),
                "images_served": self.images_served,
                "photo_ids_served": len(self.photo_ids_served),
                "photo_ids_returned": len(self.photo_ids_returned),
                "placeholder_redirects": self.placeholder_redirects,
                "faults": dict(self.faults),
            }


class SlidingWindowLimiter:
    """Per-key limit of calls in the last ``window`` seconds (Flickr: 3,600 an hour)."""

    def __init__(self, limit: int, window: float = 3600.0) -> None:
        self.limit = limit
        self.window = window
        self._calls: dict[str, deque[float]] = {}

    def acquire(self, key: str, now: float | None = None) -> float | None:
        """Count a call and return None, or return the seconds to wait when over the limit."""
        if self.limit <= 0:
            return None
        now = time.monotonic() if now is None else now
        calls = self._calls.setdefault(key, deque())
        while calls and now - calls[0] >= self.window:
            calls.popleft()
        if len(calls) >= self.limit:
            return calls[0] + self.window - now
        calls.append(now)
        return None


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ResponseFormat:
    kind: str  # "json", "jsonp" or "xml"
    callback: str = "jsonFlickrApi"


@dataclass
class _State:
    settings: EmulatorSettings
    catalog: Catalog
    stats: EmulatorStats
    limiter: SlidingWindowLimiter
    api_attempts: AttemptCounter
    image_attempts: AttemptCounter
    images: ImageCache
    executor: ThreadPoolExecutor
    total_as_string: bool


STATE = web.AppKey("emulator_state", _State)


# ---------------------------------------------------------------------------------------------
# Request parsing (pure)


def api_key_of(params: Mapping[str, str], authorization: str | None) -> str | None:
    """The API key: ``api_key``, else the OAuth consumer key (header, then parameters)."""
    if params.get("api_key"):
        return params["api_key"]
    if authorization and authorization.strip().lower().startswith("oauth "):
        for name, value in _OAUTH_PARAM.findall(authorization):
            if name == "oauth_consumer_key" and value:
                return unquote(value)
    return params.get("oauth_consumer_key") or None


def canonical_request(params: Mapping[str, str]) -> str:
    """The identity of a call for fault decisions: its parameters minus authentication."""
    return urlencode(sorted((k, v) for k, v in params.items() if k not in AUTH_PARAMS))


def response_format(params: Mapping[str, str]) -> ResponseFormat:
    fmt = params.get("format", "rest") or "rest"
    if fmt == "json":
        if params.get("nojsoncallback") == "1":
            return ResponseFormat("json")
        return ResponseFormat("jsonp", params.get("jsoncallback") or "jsonFlickrApi")
    return ResponseFormat("xml")


def parse_date(value: str | None) -> int | None:
    """Unix seconds from a unix timestamp or a MySQL datetime (UTC); None if unparsable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


@dataclass(frozen=True)
class SearchRequest:
    query: SearchQuery
    per_page: int
    page: int
    extras: frozenset[str]


def parse_search(params: Mapping[str, str]) -> SearchRequest:
    """Normalise ``flickr.photos.search`` parameters; raises ApiError(1 or 3)."""
    positive: list[str] = []
    exclude: list[str] = []
    for raw in params.get("tags", "").split(","):
        raw = raw.strip()
        target = exclude if raw.startswith("-") else positive
        tag = normalize_tag(raw.lstrip("-"))
        if tag and tag not in target:
            target.append(tag)
    text = params.get("text", "").split()
    if text and not positive:
        # Free text is matched like one tag made of its words (Flickr's tag normalisation).
        words = [w for w in text if not w.startswith("-")]
        if words:
            positive.append(normalize_tag("".join(words)))
        exclude.extend(normalize_tag(w[1:]) for w in text if w.startswith("-") and len(w) > 1)
    if not positive:
        raise ApiError(
            3,
            "Parameterless searches have been disabled. "
            "Please use flickr.photos.getRecent instead.",
        )
    mode = "all" if params.get("tag_mode", "any").strip().lower() == "all" else "any"
    if mode == "all" and len(positive) + len(exclude) > MAX_ALL_TAGS:
        raise ApiError(1, "Too many tags in ALL query")
    per_page = _int(params.get("per_page"), DEFAULT_PER_PAGE)
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
    page = max(1, _int(params.get("page"), 1))
    licenses: tuple[int, ...] | None = None
    if params.get("license"):
        ids = {int(x) for x in params["license"].split(",") if x.strip().isdigit()}
        licenses = tuple(sorted(i for i in ids if i in LICENSES)) or None
    sort = params.get("sort", "date-posted-desc")
    media = params.get("media", "all").strip().lower()
    query = SearchQuery(
        tags=tuple(sorted(positive)),
        exclude=tuple(sorted(exclude)),
        tag_mode=mode,
        min_upload=parse_date(params.get("min_upload_date")),
        max_upload=parse_date(params.get("max_upload_date")),
        min_taken=parse_date(params.get("min_taken_date")),
        max_taken=parse_date(params.get("max_taken_date")),
        licenses=licenses,
        sort=sort if sort in SORTS else "date-posted-desc",
        media=media if media in MEDIA else "all",
    )
    extras = frozenset(e.strip() for e in params.get("extras", "").split(",") if e.strip())
    return SearchRequest(query=query, per_page=per_page, page=page, extras=extras)


def image_path(info: PhotoInfo, suffix: str, ext: str = "jpg") -> str:
    """The CDN path of one size of a photo (the original has its own secret)."""
    if suffix == "o":
        return f"/{info.server}/{info.id}_{info.originalsecret}_o.{ext}"
    tail = f"_{suffix}" if suffix else ""
    return f"/{info.server}/{info.id}_{info.secret}{tail}.{ext}"


# ---------------------------------------------------------------------------------------------
# Response rendering (pure)


def _xml_element(name: str, value: Mapping[str, Any]) -> ET.Element:
    el = ET.Element(name)
    for k, v in value.items():
        if k == "_content":
            el.text = str(v)
        elif isinstance(v, list):
            for item in v:
                el.append(_xml_element(k, item))
        elif isinstance(v, Mapping):
            el.append(_xml_element(k, v))
        else:
            el.set(k, str(v))
    return el


def render_body(payload: Mapping[str, Any], fmt: ResponseFormat) -> tuple[str, str]:
    """(body, content type) of a payload that includes ``stat``, in Flickr's wire formats."""
    if fmt.kind == "xml":
        rsp = ET.Element("rsp", stat=str(payload["stat"]))
        if payload["stat"] == "fail":
            ET.SubElement(rsp, "err", code=str(payload["code"]), msg=str(payload["message"]))
        else:
            for k, v in payload.items():
                if k != "stat":
                    rsp.append(_xml_element(k, v))
        body = '<?xml version="1.0" encoding="utf-8" ?>\n' + ET.tostring(rsp, encoding="unicode")
        return body + "\n", "text/xml; charset=utf-8"
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if fmt.kind == "jsonp":
        return f"{fmt.callback}({text})", "text/javascript; charset=utf-8"
    return text, "application/json; charset=utf-8"


def error_payload(code: int, message: str) -> dict[str, Any]:
    return {"stat": "fail", "code": code, "message": message}


# ---------------------------------------------------------------------------------------------
# REST handlers


def _licenses_payload() -> dict[str, Any]:
    items = [{"id": str(i), "name": LICENSES[i][0], "url": LICENSES[i][1]} for i in LICENSE_ORDER]
    return {"licenses": {"license": items}, "stat": "ok"}


def _photo_dict(
    state: _State, info: PhotoInfo, extras: frozenset[str], base: str, tags: tuple[str, ...]
) -> dict[str, Any]:
    photo: dict[str, Any] = {
        "id": info.id,
        "owner": info.owner,
        "secret": info.secret,
        "server": info.server,
        "farm": info.farm,
        "title": info.title,
        "ispublic": 1,
        "isfriend": 0,
        "isfamily": 0,
    }
    if "license" in extras:
        photo["license"] = str(info.license)
    if "date_upload" in extras:
        photo["dateupload"] = str(info.dateupload)
    if "date_taken" in extras:
        taken = datetime.fromtimestamp(info.datetaken, UTC)
        photo["datetaken"] = taken.strftime("%Y-%m-%d %H:%M:%S")
        photo["datetakengranularity"] = 0
        photo["datetakenunknown"] = "0"
    if "owner_name" in extras:
        photo["ownername"] = info.ownername
    if "tags" in extras:
        photo["tags"] = " ".join((*state.catalog.tags_containing(int(info.id), tags), *info.words))
    variant = photo_variant(state.settings.faults, state.settings.seed, info.visual_id)
    original_ext = "png" if variant == "png_alpha" else "jpg"
    if photo_on_foreign_host(state.settings.faults, state.settings.seed, int(info.id)):
        state.stats.record_fault("image_foreign_host")
        base = f"http://{FOREIGN_IMAGE_HOST}"
    if "original_format" in extras and info.has_original:
        photo["originalsecret"] = info.originalsecret
        photo["originalformat"] = original_ext
    if "o_dims" in extras and info.has_original:
        photo["o_width"], photo["o_height"] = str(info.width), str(info.height)
    if "media" in extras:
        photo["media"], photo["media_status"] = info.media, "ready"
    for extra in sorted(extras & SIZE_BY_EXTRA.keys(), key=list(SIZE_BY_EXTRA).index):
        spec = SIZE_BY_EXTRA[extra]
        dims = size_dims(info, spec.suffix)
        if dims is None:
            continue  # Flickr omits a size the photo does not have
        key = extra.removeprefix("url_")
        ext = original_ext if spec.suffix == "o" else "jpg"
        photo[extra] = base + image_path(info, spec.suffix, ext)
        photo[f"height_{key}"], photo[f"width_{key}"] = dims[1], dims[0]
    return photo


def _search_payload(state: _State, params: Mapping[str, str], base: str) -> dict[str, Any]:
    req = parse_search(params)
    ordered = state.catalog.search(req.query)
    total = len(ordered)
    pages = math.ceil(total / req.per_page)
    start, stop = page_bounds(total, req.per_page, req.page)
    ids = page_with_duplicates(
        ordered,
        start,
        stop,
        req.per_page,
        state.settings.page_duplicate_rate,
        state.settings.seed,
        f"{req.query.key()}|{req.per_page}",
    )
    if len(ids) > stop - start:
        state.stats.record_fault("page_duplicate")
    photos = []
    for pid in ids:
        info = state.catalog.photo(pid)
        assert info is not None  # every catalog id is a valid photo id
        photos.append(_photo_dict(state, info, req.extras, base, req.query.tags))
    return {
        "photos": {
            "page": req.page,
            "pages": pages,
            "perpage": req.per_page,
            "total": str(total) if state.total_as_string else total,
            "photo": photos,
        },
        "stat": "ok",
    }


def _echo_payload(params: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: {"_content": v} for k, v in params.items() if k not in AUTH_PARAMS}
    out["stat"] = "ok"
    return out


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _read_params(request: web.Request) -> dict[str, str]:
    params = {k: v for k, v in request.query.items()}
    if request.method == "POST":
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _text_response(status: int, text: str, content_type: str, **headers: str) -> web.Response:
    resp = web.Response(status=status, text=text, headers=headers)
    resp.content_type, _, charset = content_type.partition("; charset=")
    resp.charset = charset or None
    return resp


async def handle_rest(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings, faults = state.settings, state.settings.faults
    params = await _read_params(request)
    key = api_key_of(params, request.headers.get("Authorization"))
    method = params.get("method", "")
    state.stats.record_api(key or "", method)
    fmt = response_format(params)
    if faults.api_latency_s:
        await asyncio.sleep(faults.api_latency_s)

    def answer(payload: Mapping[str, Any]) -> web.Response:
        body, ctype = render_body(payload, fmt)
        return _text_response(200, body, ctype)

    if params.get("format", "rest") not in ("rest", "json", ""):
        return answer(error_payload(111, f'Format "{params["format"]}" not found'))
    if key != settings.api_key:
        return answer(error_payload(100, "Invalid API Key (Key not found)"))
    wait = state.limiter.acquire(key)
    if wait is not None:
        state.stats.record_fault("rate_limit")
        return _text_response(
            429,
            _HTML_ERROR.format("429 Too Many Requests"),
            "text/html; charset=utf-8",
            **{"Retry-After": str(max(1, math.ceil(wait)))},
        )
    identity = canonical_request(params)
    if decide_persistent(settings.seed, "api_endless", faults.api_endless, identity):
        state.stats.record_fault("api_endless")
        return await _send_endless(request, fmt)
    fault = transient_fault(
        faults, settings.seed, API_TRANSIENT_FAULTS, identity, state.api_attempts.next(identity)
    )
    if fault is not None:
        state.stats.record_fault(fault)
        log.debug("injecting %s into %s", fault, identity)
        if fault == "api_fail_105":
            return answer(error_payload(105, "Service currently unavailable"))
        if fault == "api_fail_201":
            return answer(
                error_payload(201, "Sorry, the Flickr API service is not currently available.")
            )
        if fault == "api_html_200":
            return _text_response(200, _flickr_html_page(), "text/html; charset=utf-8")
        if fault == "api_truncated":
            body, ctype = render_body(_dispatch(state, method, params, request), fmt)
            return _text_response(200, body[: max(1, len(body) * 2 // 3)], ctype)
        return _status_fault(fault, faults.retry_after_s)
    payload = _dispatch(state, method, params, request)
    if "photos" in payload:
        state.stats.record_returned([p["id"] for p in payload["photos"]["photo"]])
    return answer(payload)


def _dispatch(
    state: _State, method: str, params: Mapping[str, str], request: web.Request
) -> dict[str, Any]:
    try:
        if method == "flickr.photos.search":
            return _search_payload(state, params, _base_url(request))
        if method == "flickr.photos.licenses.getInfo":
            return _licenses_payload()
        if method == "flickr.test.echo":
            return _echo_payload(params)
        raise ApiError(112, f'Method "{method}" not found')
    except ApiError as err:
        return error_payload(err.code, err.message)


def _flickr_html_page() -> str:
    return (
        "<!DOCTYPE html>\n<html><head><title>Flickr: Oops!</title></head><body>"
        "<h1>Flickr is having a massage.</h1><p>Please try again in a moment.</p>"
        "</body></html>\n"
    )


async def _send_endless(request: web.Request, fmt: ResponseFormat) -> web.StreamResponse:
    """HTTP 200 whose body never ends, as a broken proxy once sent: the start of a search
    answer, then one photo over and over until the client hangs up (or ENDLESS_LIMIT_BYTES)."""
    photo = {
        "id": "10000000000",
        "owner": "10000000@N00",
        "secret": "0123456789",
        "server": "65535",
        "farm": 66,
        "title": "again",
        "ispublic": 1,
        "isfriend": 0,
        "isfamily": 0,
    }
    if fmt.kind == "xml":
        head = '<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="ok"><photos page="1">'
        item = ET.tostring(_xml_element("photo", photo), encoding="unicode")
    else:
        head = '{"photos":{"page":1,"photo":['
        if fmt.kind == "jsonp":
            head = f"{fmt.callback}({head}"
        item = json.dumps(photo, separators=(",", ":")) + ","
    chunk = (item * (64 * 1024 // len(item) + 1)).encode()
    content_type, _, charset = render_body({"stat": "ok"}, fmt)[1].partition("; charset=")
    resp = web.StreamResponse(status=200)
    resp.content_type, resp.charset = content_type, charset or None
    resp.enable_chunked_encoding()  # no Content-Length: only the reader can tell it is too long
    try:
        await resp.prepare(request)
        await resp.write(head.encode())
        sent = len(head)
        while sent < ENDLESS_LIMIT_BYTES:
            await resp.write(chunk)
            sent += len(chunk)
    except ConnectionError:
        pass  # the client hung up: what a client with a size cap does
    return resp


def _status_fault(fault: str, retry_after_s: int) -> web.Response:
    """A transient HTTP-level fault shared by the API and the CDN: 429 or a 5xx."""
    if fault.endswith("429"):
        return _text_response(
            429,
            _HTML_ERROR.format("429 Too Many Requests"),
            "text/html; charset=utf-8",
            **{"Retry-After": str(retry_after_s)},
        )
    status = int(fault[-3:])
    title = {
        500: "500 Internal Server Error",
        502: "502 Bad Gateway",
        503: "503 Service Unavailable",
    }
    return _text_response(status, _HTML_ERROR.format(title[status]), "text/html; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# CDN handlers


async def handle_placeholder(request: web.Request) -> web.Response:
    return web.Response(body=placeholder_png(), content_type="image/png")


def _redirect_to_placeholder(request: web.Request) -> web.Response:
    request.app[STATE].stats.record_redirect()
    return web.Response(status=302, headers={"Location": _base_url(request) + PLACEHOLDER_PATH})


async def handle_image(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings, faults = state.settings, state.settings.faults
    state.stats.record_image_request(request.path)
    if faults.image_latency_s:
        await asyncio.sleep(faults.image_latency_s)
    match = _IMAGE_NAME.match(request.match_info["name"])
    photo_id = parse_photo_id(match.group(1)) if match else None
    info = state.catalog.photo(photo_id) if photo_id is not None else None
    suffix = (match.group(3) or "") if match else ""
    secret = info and (info.originalsecret if suffix == "o" else info.secret)
    if (
        match is None
        or info is None
        or suffix not in SIZE_BY_SUFFIX
        or match.group(2) != secret
        or request.match_info["server"] != info.server
    ):
        raise web.HTTPNotFound(text="404 Not Found")
    assert photo_id is not None
    gone = photo_gone(faults, settings.seed, photo_id)
    if gone == "image_404":
        state.stats.record_fault(gone)
        raise web.HTTPNotFound(text="404 Not Found")
    if gone == "image_unavailable":
        state.stats.record_fault(gone)
        return _redirect_to_placeholder(request)
    dims = size_dims(info, suffix)
    if dims is None:
        return _redirect_to_placeholder(request)  # Flickr does the same for a missing size

    # A broken photo meets its fault on every attempt; others may meet a transient one.
    fault = photo_broken(faults, settings.seed, photo_id)
    if fault is None:
        fault = transient_fault(
            faults,
            settings.seed,
            IMAGE_TRANSIENT_FAULTS,
            f"{info.id}_{suffix}",
            state.image_attempts.next(request.path),
        )
    if fault is not None:
        state.stats.record_fault(fault)
        log.debug("injecting %s into %s", fault, request.path)
        if fault in ("image_html_200", "image_html_200_always"):
            return _text_response(200, _flickr_html_page(), "text/html; charset=utf-8")
        if fault not in ("image_truncated", "image_stall", "image_stall_always"):
            return _status_fault(fault, faults.retry_after_s)

    spec = RenderSpec(
        seed=settings.seed,
        visual_id=info.visual_id,
        size=dims,
        full_size=(info.width, info.height),
        square=SIZE_BY_SUFFIX[suffix].square,
        variant=photo_variant(faults, settings.seed, info.visual_id),
        near_duplicate=info.duplicate == "near_duplicate",
    )
    item = state.images.get(spec)
    if item is None:
        loop = asyncio.get_running_loop()
        item = await loop.run_in_executor(state.executor, state.images.get_or_render, spec)
    data, ctype = item
    if fault == "image_truncated":
        return await _send_truncated(request, data, ctype)
    if fault in ("image_stall", "image_stall_always"):
        return await _send_stalled(request, data, ctype, faults.stall_s, state, info.id)
    state.stats.record_served(info.id)
    return web.Response(body=data, content_type=ctype)


async def _send_truncated(request: web.Request, data: bytes, ctype: str) -> web.StreamResponse:
    """Promise the whole body in Content-Length, send half, then drop the connection."""
    resp = web.StreamResponse(status=200)
    resp.content_type = ctype
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    if request.transport is not None:
        request.transport.close()
    return resp


async def _send_stalled(
    request: web.Request, data: bytes, ctype: str, stall_s: float, state: _State, photo_id: str
) -> web.StreamResponse:
    """Send the headers and half the body, stall for ``stall_s``, then finish normally."""
    resp = web.StreamResponse(status=200)
    resp.content_type = ctype
    resp.content_length = len(data)
    try:
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        await asyncio.sleep(stall_s)
        await resp.write(data[len(data) // 2 :])
        await resp.write_eof()
    except ConnectionError:
        return resp  # the client gave up waiting: the expected outcome for a short timeout
    state.stats.record_served(photo_id)
    return resp


async def handle_index(request: web.Request) -> web.Response:
    state = request.app[STATE]
    text = (
        "asyncds Flickr emulator\n"
        f"REST API: {_base_url(request)}{REST_PATH} (api_key={state.settings.api_key})\n"
        f"sizes: {', '.join(s.extra or '_' + s.suffix for s in SIZES)}\n"
        f"stats: {json.dumps(state.stats.snapshot())}\n"
    )
    return web.Response(text=text)


# ---------------------------------------------------------------------------------------------
# Application and runners


def build_app(settings: EmulatorSettings | None = None) -> web.Application:
    """The emulator as an aiohttp application (REST API and image CDN)."""
    settings = settings or EmulatorSettings()
    app = web.Application()
    state = _State(
        settings=settings,
        catalog=settings.make_catalog(),
        stats=EmulatorStats(),
        limiter=SlidingWindowLimiter(settings.faults.rate_limit_per_hour),
        api_attempts=AttemptCounter(),
        image_attempts=AttemptCounter(),
        images=ImageCache(),
        executor=ThreadPoolExecutor(max_workers=4, thread_name_prefix="emulator-render"),
        total_as_string=unit(settings.seed, "total_as_string", 0) < 0.5,
    )
    app[STATE] = state

    async def shutdown_executor(_: web.Application) -> None:
        state.executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown_executor)
    for path in (REST_PATH, REST_PATH.rstrip("/")):
        app.router.add_route("GET", path, handle_rest)
        app.router.add_route("POST", path, handle_rest)
    app.router.add_get(PLACEHOLDER_PATH, handle_placeholder)
    app.router.add_get(PLACEHOLDER_L_PATH, handle_placeholder)
    app.router.add_get(r"/{server:\d+}/{name}", handle_image)
    app.router.add_get("/", handle_index)
    return app


def stats_of(app: web.Application) -> EmulatorStats:
    return app[STATE].stats


def catalog_of(app: web.Application) -> Catalog:
    return app[STATE].catalog


@dataclass
class RunningEmulator:
    """A started emulator: where it listens and what it has seen."""

    base_url: str
    settings: EmulatorSettings
    app: web.Application

    @property
    def api_url(self) -> str:
        return self.base_url + REST_PATH

    @property
    def port(self) -> int:
        """The port it listens on (to start it again on the same one)."""
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def stats(self) -> EmulatorStats:
        return stats_of(self.app)

    @property
    def catalog(self) -> Catalog:
        return catalog_of(self.app)

    def image_url(self, photo_id: str | int, suffix: str = "m") -> str:
        """The URL of one size of a photo (as a search with the matching url_X extra gives)."""
        info = self.catalog.photo(int(photo_id))
        if info is None:
            raise ValueError(f"not a photo id: {photo_id!r}")
        return self.base_url + image_path(info, suffix)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@asynccontextmanager
async def running_emulator(
    settings: EmulatorSettings | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on ``host:port`` (0 = any free port) for the duration of the block."""
    settings = settings or EmulatorSettings()
    app = build_app(settings)
    # Short shutdown: in-flight stalls are bounded anyway and tests should not wait on them.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        emu = RunningEmulator(f"http://{_url_host(host)}:{bound_port}", settings, app)
        log.info("Flickr emulator listening on %s", emu.api_url)
        yield emu
    finally:
        await runner.cleanup()


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread, for synchronous clients.

    ``with EmulatorThread(settings) as emu: ...`` gives ``emu.api_url``, ``emu.base_url`` and
    ``emu.stats`` like :func:`running_emulator`.
    """

    def __init__(
        self, settings: EmulatorSettings | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.host = host
        self.port = port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._emu: RunningEmulator | None = None

    @property
    def running(self) -> RunningEmulator:
        if self._emu is None:
            raise RuntimeError("the emulator thread is not running")
        return self._emu

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def api_url(self) -> str:
        return self.running.api_url

    @property
    def stats(self) -> EmulatorStats:
        return self.running.stats

    @property
    def catalog(self) -> Catalog:
        return self.running.catalog

    def image_url(self, photo_id: str | int, suffix: str = "m") -> str:
        return self.running.image_url(photo_id, suffix)

    def start(self, timeout: float = 10.0) -> EmulatorThread:
        self._thread = threading.Thread(target=self._run, name="flickr-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_emulator(self.settings, self.host, self.port) as emu:
            self._emu = emu
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
