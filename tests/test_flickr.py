"""flickr.py against aioresponses: paging, the 4,000 cap, retries, redaction, the limiter.

Nothing here can reach Flickr: the API url is a reserved ``.test`` host and aioresponses answers
(or refuses) every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
import traceback
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import CallbackResult
from aioresponses import core as aioresponses_core
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from asyncds.config import ClassSpec, FlickrSettings
from asyncds.flickr import (
    EXTRAS,
    LICENSES,
    MAX_ANSWER_BYTES,
    MAX_ANSWER_MB,
    Candidate,
    ClassSearch,
    FlickrAuthError,
    FlickrClient,
    FlickrError,
    FlickrUnavailableError,
    PageResult,
    SearchCursor,
    SearchPage,
    candidate_from_photo,
    choose_size,
    collect_candidates,
    license_names,
    limiter_parameters,
    redact,
)
from asyncds.retry import RetryPolicy
from tests.aiomock import Mocked, MockResponse, roomy_stream_reader

API = "https://api.flickr.test/services/rest/"
API_RE = re.compile(r"^https://api\.flickr\.test/services/rest/.*$")
KEY = "0123456789abcdef0123456789abcdef"  # a fake key; must never show up in logs or errors
FAST = RetryPolicy(retries=5, backoff_s=0.001, max_backoff_s=0.01)
UNLIMITED = 36_000_000  # calls/hour: ~10,000 calls/s, so the limiter never slows unit tests
T0 = 1_500_000_000
OK = {"stat": "ok", "answer": 42}
FOX = ClassSpec(name="fox", count=100, tags=("fox",))


def fail(code: int | str, message: str = "Sorry") -> dict[str, Any]:
    return {"stat": "fail", "code": code, "message": message}


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def mocked(monkeypatch):
    monkeypatch.setattr(aioresponses_core, "stream_reader_factory", roomy_stream_reader)
    with Mocked() as m:
        yield m


def make_client(
    session: aiohttp.ClientSession,
    *,
    api_key: str = KEY,
    calls_per_hour: int = UNLIMITED,
    retry: RetryPolicy = FAST,
) -> FlickrClient:
    return FlickrClient(
        session, api_url=API, api_key=api_key, calls_per_hour=calls_per_hour, retry=retry
    )


def settings(
    per_page: int = 500, license: tuple[int, ...] = (), media: str = "photos"
) -> FlickrSettings:
    return FlickrSettings(api_url=API, per_page=per_page, license=license, media=media)


# -- a synthetic Flickr -----------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    id: str
    uploaded: int


class FakeFlickr:
    """An aioresponses callback serving a catalog with Flickr's search quirks.

    Filters by the inclusive upload-date window, reports the uncapped total (as a string, like
    2020-era Flickr), shows only the first 4,000 matches and answers pages past ``pages`` or the
    cap with repeats. ``dupes`` adds Flickr's duplicates: one within every page and one photo
    from outside the window on every page.
    """

    def __init__(
        self, uploads: Iterable[int], *, dupes: bool = False, date_filter: bool = True
    ) -> None:
        self.photos = sorted(
            (Photo(f"{9_000_000 + i}", ts) for i, ts in enumerate(uploads)),
            key=lambda p: (-p.uploaded, p.id),
        )
        self.dupes = dupes
        self.date_filter = date_filter
        self.requests: list[dict[str, str]] = []

    def matching(self, lo: int, hi: int) -> list[Photo]:
        return [p for p in self.photos if lo <= p.uploaded <= hi]

    def __call__(self, url: URL, **_: Any) -> CallbackResult:
        query = dict(url.query)
        self.requests.append(query)
        matches = self.photos
        if self.date_filter:
            lo, hi = int(query["min_upload_date"]), int(query["max_upload_date"])
            matches = self.matching(lo, hi)
        per_page, page = int(query["per_page"]), int(query["page"])
        visible = matches[:4000]
        start = (page - 1) * per_page
        if visible and start >= len(visible):  # past the end or the cap: repeats, never empty
            start = max(0, len(visible) - per_page)
        items = [photo_json(p) for p in visible[start : start + per_page]]
        if self.dupes and items:
            items.insert(len(items) // 2, items[0])
            items.append(photo_json(self.photos[0]))
        body = {
            "photos": {
                "page": page,
                "pages": math.ceil(len(matches) / per_page),
                "perpage": per_page,
                "total": str(len(matches)),
                "photo": items,
            },
            "stat": "ok",
        }
        return CallbackResult(payload=body, response_class=MockResponse)

    def pages_requested(self) -> list[int]:
        return [int(q["page"]) for q in self.requests]


def photo_json(p: Photo) -> dict[str, Any]:
    return {
        "id": p.id,
        "owner": "12345678@N05",
        "secret": "a1b2c3d4e5",
        "server": "65535",
        "farm": 66,
        "title": f"fox {p.id}",
        "license": "4",
        "dateupload": str(p.uploaded),
        "ownername": "Jane Example",
        "url_s": f"https://live.staticflickr.test/65535/{p.id}_a1b2c3d4e5_m.jpg",
        "height_s": "180",
        "width_s": "240",
        "url_m": f"https://live.staticflickr.test/65535/{p.id}_a1b2c3d4e5.jpg",
        "height_m": 375,
        "width_m": 500,
    }


def catalog_9000() -> list[int]:
    """9,000 uploads: spread over ~4 months, a dense burst, and 50 in one second."""
    rng = random.Random(7)
    spread = [rng.randint(T0, T0 + 10_000_000) for _ in range(5_950)]
    burst = [rng.randint(T0 + 5_000_000, T0 + 5_001_000) for _ in range(3_000)]
    return spread + burst + [T0 + 7_777_777] * 50


async def walk(search: ClassSearch) -> list[PageResult]:
    return [result async for result in search.pages()]


def ids_of(results: Iterable[PageResult]) -> list[str]:
    return [c.photo_id for r in results for c in r.candidates]


# -- paging and the 4,000 cap -----------------------------------------------------------------


async def test_search_sends_the_class_query(session, mocked):
    fake = FakeFlickr([T0 + 5])
    mocked.get(API_RE, callback=fake, repeat=True)
    spec = ClassSpec(name="fox", count=10, tags=("red fox", "vulpes"), tag_mode="all")
    search = ClassSearch(
        make_client(session), spec, settings(license=(4, 9)), max_side=240, start=T0, end=T0 + 9
    )
    await walk(search)
    (query,) = fake.requests
    assert query == {
        "method": "flickr.photos.search",
        "api_key": KEY,
        "format": "json",
        "nojsoncallback": "1",
        "tags": "red fox,vulpes",
        "tag_mode": "all",
        "per_page": "500",
        "sort": "relevance",
        "safe_search": "1",
        "media": "photos",
        "license": "4,9",
        "extras": EXTRAS,
        "min_upload_date": str(T0),
        "max_upload_date": str(T0 + 9),
        "page": "1",
    }


async def test_a_suspended_search_holds_no_parsed_page(session, mocked):
    # While a producer enqueues a page's candidates, the search generator waits at its yield;
    # the page's parsed JSON (about 2 MB for 500 photos) must not stay alive in that frame,
    # one per class (s3 in benchmarks/README.md).
    fake = FakeFlickr([T0 + i for i in range(600)])
    mocked.get(API_RE, callback=fake, repeat=True)
    search = ClassSearch(
        make_client(session), FOX, settings(), max_side=240, start=T0, end=T0 + 999
    )
    pages = search.pages()
    first = await anext(pages)
    assert len(first.candidates) == 500
    frame = pages.ag_frame
    assert frame is not None
    held = [v for v in frame.f_locals.values() if isinstance(v, SearchPage)]
    assert held == []
    # Nor its photos: the only list left is the candidates handed out.
    photos = [
        v for v in frame.f_locals.values() if isinstance(v, list) and v and isinstance(v[0], dict)
    ]
    assert photos == []
    await pages.aclose()


@pytest.mark.parametrize("media", ["videos", "all"])
async def test_search_sends_the_configured_media(session, mocked, media):
    fake = FakeFlickr([T0 + 5])
    mocked.get(API_RE, callback=fake, repeat=True)
    search = ClassSearch(
        make_client(session), FOX, settings(media=media), max_side=240, start=T0, end=T0 + 9
    )
    await walk(search)
    assert [q["media"] for q in fake.requests] == [media]


async def test_paging_stops_at_pages_when_fewer_than_the_cap(session, mocked):
    fake = FakeFlickr([T0 + i for i in range(1_200)])
    mocked.get(API_RE, callback=fake, repeat=True)
    client = make_client(session)
    results = await walk(
        ClassSearch(client, FOX, settings(), max_side=240, start=T0, end=T0 + 2000)
    )
    assert fake.pages_requested() == [1, 2, 3]  # pages == 3; page 4 would still return photos
    assert client.calls == 3
    assert len(set(ids_of(results))) == 1_200
    assert results[-1].cursor.exhausted
    assert all(r.total == 1_200 for r in results)


@pytest.mark.parametrize(("per_page", "expected_pages"), [(500, 8), (100, 40)])
async def test_paging_stops_at_the_cap_in_an_overfull_second(
    session, mocked, caplog, per_page, expected_pages
):
    # 4,500 photos uploaded in one second: the window cannot be split, so walk what Flickr
    # shows (4,000) and stop, although `pages` says 9 or 45.
    fake = FakeFlickr([T0] * 4_500)
    mocked.get(API_RE, callback=fake, repeat=True)
    client = make_client(session)
    search = ClassSearch(client, FOX, settings(per_page), max_side=240, start=T0, end=T0)
    results = await walk(search)
    assert fake.pages_requested() == list(range(1, expected_pages + 1))
    assert client.calls == expected_pages
    assert len(set(ids_of(results))) == 4_000
    assert "only the first 4000" in caplog.text


async def test_an_empty_search_is_one_request_and_exhausted(session, mocked):
    fake = FakeFlickr([])
    mocked.get(API_RE, callback=fake, repeat=True)
    client = make_client(session)
    results = await walk(ClassSearch(client, FOX, settings(), max_side=240, start=T0, end=T0 + 9))
    assert client.calls == 1
    assert ids_of(results) == []
    assert results[-1].cursor.exhausted


async def test_date_windows_reach_past_the_cap(session, mocked, caplog):
    fake = FakeFlickr(catalog_9000())
    mocked.get(API_RE, callback=fake, repeat=True)
    client = make_client(session)
    search = ClassSearch(client, FOX, settings(), max_side=240, start=T0, end=T0 + 10_000_000)
    results = await walk(search)
    ids = ids_of(results)
    assert len(ids) == len(set(ids)) == 9_000
    assert results[-1].cursor.exhausted and results[-1].total == 9_000
    for query in fake.requests:
        lo, hi = int(query["min_upload_date"]), int(query["max_upload_date"])
        total = len(fake.matching(lo, hi))
        page = int(query["page"])
        # Only windows Flickr shows completely are paged, and never past `pages` or the cap.
        assert page == 1 or total <= 4_000
        assert page <= max(1, min(math.ceil(total / 500), 8))
    assert client.calls == len(fake.requests) < 60
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_server_ignoring_date_windows_does_not_split_forever(session, mocked, caplog):
    fake = FakeFlickr(catalog_9000(), date_filter=False)
    mocked.get(API_RE, callback=fake, repeat=True)
    client = make_client(session)
    search = ClassSearch(client, FOX, settings(), max_side=240, start=T0, end=T0 + 10_000_000)
    ids = ids_of(await walk(search))
    assert len(ids) == len(set(ids)) == 4_000  # all it ever shows
    assert client.calls < 60
    assert "ignores upload-date windows" in caplog.text


async def test_collect_candidates_returns_all_9000_of_a_class_of_9000(session, mocked):
    mocked.get(API_RE, callback=FakeFlickr(catalog_9000()), repeat=True)
    found = await collect_candidates(
        make_client(session), FOX, settings(), max_side=240, limit=9_000, start=T0, end=T0 + 10**7
    )
    assert len({c.photo_id for c in found}) == len(found) == 9_000


async def test_collect_candidates_fetches_no_more_pages_than_needed(session, mocked):
    fake = FakeFlickr([T0 + i for i in range(1_200)])
    mocked.get(API_RE, callback=fake, repeat=True)
    client = make_client(session)
    found = await collect_candidates(
        client, FOX, settings(), max_side=240, limit=700, start=T0, end=T0 + 2000
    )
    assert len(found) == 700
    assert client.calls == 2
    assert all(isinstance(c, Candidate) and c.label == "fox" for c in found)


async def test_duplicates_within_pages_and_across_windows_are_dropped(session, mocked):
    fake = FakeFlickr(catalog_9000(), dupes=True)
    mocked.get(API_RE, callback=fake, repeat=True)
    search = ClassSearch(
        make_client(session), FOX, settings(), max_side=240, start=T0, end=T0 + 10_000_000
    )
    ids = ids_of(await walk(search))
    assert len(ids) == len(set(ids)) == 9_000


async def test_without_dedupe_repeats_are_left_to_the_caller(session, mocked):
    # The pipeline's state skips repeats by its (class, photo id) key; the search keeps no set.
    fake = FakeFlickr(catalog_9000(), dupes=True)
    mocked.get(API_RE, callback=fake, repeat=True)
    search = ClassSearch(
        make_client(session),
        FOX,
        settings(),
        max_side=240,
        start=T0,
        end=T0 + 10_000_000,
        dedupe=False,
    )
    ids = ids_of(await walk(search))
    assert len(set(ids)) == 9_000
    assert len(ids) > 9_000, "the fixture repeats photos across windows"
    assert search.found == len(ids)


async def test_seen_ids_preseed_the_dedupe(session, mocked):
    fake = FakeFlickr([T0 + i for i in range(10)])
    mocked.get(API_RE, callback=fake, repeat=True)
    seen = {p.id for p in fake.photos[:4]}
    search = ClassSearch(
        make_client(session), FOX, settings(), max_side=240, start=T0, end=T0 + 99, seen_ids=seen
    )
    ids = ids_of(await walk(search))
    assert sorted(ids) == sorted(p.id for p in fake.photos[4:])


@pytest.mark.parametrize("stop_at", ["mid-window", "after-a-split"])
async def test_resume_from_a_cursor_continues_exactly(session, mocked, stop_at):
    fake = FakeFlickr(catalog_9000())
    mocked.get(API_RE, callback=fake, repeat=True)
    span = {"start": T0, "end": T0 + 10_000_000}

    whole = make_client(session)
    expected = ids_of(await walk(ClassSearch(whole, FOX, settings(), max_side=240, **span)))

    first = make_client(session)
    done: list[PageResult] = []
    async for result in ClassSearch(first, FOX, settings(), max_side=240, **span).pages():
        done.append(result)
        cur = result.cursor
        if stop_at == "mid-window" and cur.window is not None and cur.page > 2:
            break
        if stop_at == "after-a-split" and cur.window is None and len(cur.pending) > 2:
            break
    else:
        pytest.fail(f"the walk never reached a {stop_at} point")
    assert not done[-1].cursor.exhausted
    stored = done[-1].cursor.to_json()  # what the state store keeps
    seen = set(ids_of(done))

    second = make_client(session)
    resumed = ClassSearch(
        second,
        FOX,
        settings(),
        max_side=240,
        cursor=SearchCursor.from_json(stored),
        seen_ids=seen,
    )
    rest = ids_of(await walk(resumed))
    assert ids_of(done) + rest == expected
    assert first.calls + second.calls == whole.calls  # nothing fetched twice


async def test_resume_from_an_exhausted_cursor_sends_nothing(session, mocked):
    client = make_client(session)
    cursor = SearchCursor(exhausted=True, total=5)
    results = await walk(ClassSearch(client, FOX, settings(), max_side=240, cursor=cursor))
    assert [(r.candidates, r.cursor.exhausted, r.total) for r in results] == [([], True, 5)]
    assert client.calls == 0


async def test_resume_restarts_the_window_when_per_page_changed(session):
    cursor = SearchCursor(window=(T0, T0 + 9), page=5, last_page=8, per_page=100)
    search = ClassSearch(make_client(session), FOX, settings(500), max_side=240, cursor=cursor)
    assert (search.cursor.window, search.cursor.page, search.cursor.per_page) == (
        (T0, T0 + 9),
        1,
        500,
    )


def test_cursor_json_round_trip():
    cursor = SearchCursor(
        pending=((T0, T0 + 9), (T0 + 10, T0 + 20)),
        window=(T0 + 21, T0 + 30),
        page=3,
        last_page=8,
        per_page=500,
        total=123_456,
    )
    text = cursor.to_json()
    assert json.loads(text)["window"] == [T0 + 21, T0 + 30]
    assert SearchCursor.from_json(text) == cursor
    with pytest.raises(ValueError):
        SearchCursor.from_json('{"pending": 7}')


# -- retries ----------------------------------------------------------------------------------

TRANSIENT_FAULTS = {
    "code 0": {"payload": fail(0)},
    "code 10": {"payload": fail(10, "Sorry, the Flickr search API is not currently available.")},
    "code 105": {"payload": fail(105, "Service currently unavailable")},
    "code 201": {"payload": fail(201, "Sorry, the Flickr API service is not currently available")},
    "code as a string": {"payload": fail("105")},
    "HTTP 429": {"status": 429, "body": "<h1>429 Too Many Requests</h1>"},
    "HTTP 500": {"status": 500},
    "HTTP 502": {"status": 502},
    "HTTP 503": {"status": 503, "headers": {"Retry-After": "0"}},
    "timeout": {"timeout": True},
    "connection error": {"exception": aiohttp.ClientConnectionError("Connection reset by peer")},
    "server disconnected": {"exception": aiohttp.ServerDisconnectedError()},
    "HTML with 200": {
        "body": "<html><body>Flickr is down</body></html>",
        "content_type": "text/html",
    },
    "truncated JSON": {"body": '{"photos": {"page": 1, "pages": 3, "perpage": 5', "status": 200},
    "JSON without stat": {"payload": {"photos": {}}},
}


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
async def test_transient_faults_are_retried(session, mocked, fault):
    mocked.get(API_RE, **fault)
    mocked.get(API_RE, payload=OK)
    client = make_client(session)
    assert await client.call("flickr.test.echo") == OK
    assert client.calls == 2


async def test_retry_after_is_honoured(session, mocked, caplog):
    caplog.set_level(logging.INFO)
    mocked.get(API_RE, status=429, headers={"Retry-After": "0.3"})
    mocked.get(API_RE, payload=OK)
    # Backoff from 1 ms, waits capped at 60 s: any longer wait than a few ms is the server's.
    client = make_client(session, retry=RetryPolicy(retries=5, backoff_s=0.001))
    started = time.monotonic()
    assert await client.call("flickr.test.echo") == OK
    assert time.monotonic() - started >= 0.3
    assert "waiting 0.3s" in caplog.text


async def test_jsonp_wrapper_is_accepted(session, mocked):
    mocked.get(API_RE, body="jsonFlickrApi(" + json.dumps(OK) + ")", content_type="text/javascript")
    assert await make_client(session).call("flickr.test.echo") == OK


async def test_retries_stop_after_five(session, mocked):
    mocked.get(API_RE, payload=fail(105, "Service currently unavailable"), repeat=True)
    client = make_client(session)
    with pytest.raises(FlickrUnavailableError) as info:
        await client.call("flickr.test.echo")
    assert client.calls == 6  # the first attempt and five retries
    assert info.value.code == 105
    assert isinstance(info.value, FlickrError)
    assert "6 attempts" in str(info.value)


async def test_http_5xx_retries_stop_after_five(session, mocked):
    mocked.get(API_RE, status=503, repeat=True)
    client = make_client(session)
    with pytest.raises(FlickrUnavailableError, match="HTTP 503"):
        await client.call("flickr.test.echo")
    assert client.calls == 6


async def test_invalid_key_is_not_retried_and_says_how_to_fix(session, mocked):
    mocked.get(API_RE, payload=fail(100, "Invalid API Key (Key not found)"), repeat=True)
    client = make_client(session)
    with pytest.raises(FlickrAuthError) as info:
        await client.call("flickr.photos.search", tags="fox")
    assert client.calls == 1
    assert info.value.code == 100
    text = str(info.value)
    assert "Invalid API Key" in text
    assert "rejected the key in API_KEY" in text  # it is set: saying "set API_KEY" misleads
    assert "https://www.flickr.com/services/apps/by/me" in text
    assert "--emulator" in text


async def test_missing_key_sends_nothing(session, mocked):
    mocked.get(API_RE, payload=OK, repeat=True)
    client = make_client(session, api_key="")
    with pytest.raises(FlickrAuthError, match="set API_KEY"):
        await client.call("flickr.photos.search", tags="fox")
    assert client.calls == 0
    assert mocked.requests == {}


@pytest.mark.parametrize("code", [1, 3, 112])
async def test_other_fail_codes_are_permanent(session, mocked, code):
    mocked.get(API_RE, payload=fail(code, "Parameterless searches have been disabled"), repeat=True)
    client = make_client(session)
    with pytest.raises(FlickrError) as info:
        await client.call("flickr.photos.search")
    assert type(info.value) is FlickrError
    assert info.value.code == code
    assert client.calls == 1


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_other_http_errors_are_permanent(session, mocked, status):
    mocked.get(API_RE, status=status, repeat=True)
    client = make_client(session)
    with pytest.raises(FlickrError, match=f"HTTP {status}") as info:
        await client.call("flickr.photos.search")
    assert type(info.value) is FlickrError
    assert client.calls == 1


# -- the answer size cap ----------------------------------------------------------------------


class EndlessApi:
    """An API whose HTTP 200 never ends, as a broken proxy's did: JSON that opens a photo list
    and repeats one photo until the client hangs up. With ``declared``, a Content-Length that
    large instead, and then silence until the test is over."""

    HEAD = b'{"stat":"ok","photos":{"page":1,"photo":['
    PHOTO = b'{"id":"1","owner":"1@N01","secret":"abc","server":"1","farm":1,"title":"again"},'

    def __init__(self, declared: int | None = None) -> None:
        self.declared = declared
        self.requests = 0
        self.released = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/services/rest/", self.answer)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.declared is None:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = self.declared
        chunk = self.PHOTO * 1000
        with contextlib.suppress(ConnectionError):  # the client hanging up ends it
            await resp.prepare(request)
            await resp.write(self.HEAD)
            while self.declared is None:
                await resp.write(chunk)
            await self.released.wait()  # a client reading on would wait here for its timeout
        return resp


@contextlib.asynccontextmanager
async def serving(api: EndlessApi) -> AsyncIterator[str]:
    server = TestServer(api.app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/services/rest/"))
    finally:
        api.released.set()
        await server.close()


async def test_an_endless_answer_is_cut_at_the_cap(session):
    api = EndlessApi()
    async with serving(api) as url:
        client = FlickrClient(
            session,
            api_url=url,
            api_key=KEY,
            calls_per_hour=UNLIMITED,
            retry=RetryPolicy(retries=1, backoff_s=0.001, max_backoff_s=0.01),
            timeout_s=5,  # without the cap the client would read for this long, per attempt
        )
        tracemalloc.start()
        try:
            async with asyncio.timeout(30):
                with pytest.raises(FlickrUnavailableError) as info:
                    await client.call("flickr.photos.search", tags="fox")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    text = str(info.value)
    assert f"Flickr's answer to flickr.photos.search exceeded {MAX_ANSWER_MB} MB" in text, text
    found = re.search(r"stopped reading after (\d+) bytes", text)
    assert found, text
    assert MAX_ANSWER_BYTES < int(found[1]) <= MAX_ANSWER_BYTES + 64 * 1024  # one chunk past it
    # Memory: one capped body at a time (the first attempt's is freed), not the stream.
    assert peak < MAX_ANSWER_BYTES + 2 * 1024 * 1024, peak
    # Retried like the other malformed answers (HTML, truncated JSON), then given up.
    assert client.calls == api.requests == 2
    assert_no_key(*exception_texts(info.value))


async def test_an_answer_declared_over_the_cap_is_refused_unread(session):
    declared = 50 * 1024 * 1024
    api = EndlessApi(declared=declared)
    async with serving(api) as url:
        client = FlickrClient(
            session,
            api_url=url,
            api_key=KEY,
            calls_per_hour=UNLIMITED,
            retry=RetryPolicy(retries=0),
            timeout_s=5,
        )
        async with asyncio.timeout(30):
            with pytest.raises(FlickrUnavailableError) as info:
                await client.call("flickr.test.echo")
    # Reading on would have ended in "timed out": the header alone decided.
    assert f"exceeded {MAX_ANSWER_MB} MB (Content-Length {declared})" in str(info.value)
    assert api.requests == 1


async def test_an_answer_of_exactly_the_cap_is_accepted(session, mocked):
    body = json.dumps(OK)
    mocked.get(API_RE, body=body, repeat=True)

    def client(cap: int) -> FlickrClient:
        return FlickrClient(
            session,
            api_url=API,
            api_key=KEY,
            calls_per_hour=UNLIMITED,
            retry=RetryPolicy(retries=0),
            max_answer_bytes=cap,
        )

    assert await client(len(body)).call("flickr.test.echo") == OK
    with pytest.raises(FlickrUnavailableError, match=f"exceeded {len(body) - 1} bytes"):
        await client(len(body) - 1).call("flickr.test.echo")


# -- redaction --------------------------------------------------------------------------------


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[:16] not in text


def exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def response_error_with_key(status: int) -> aiohttp.ClientResponseError:
    url = URL(f"{API}?method=flickr.photos.search&api_key={KEY}")
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    return aiohttp.ClientResponseError(info, (), status=status, message="Service Unavailable")


LEAKY_FAULTS = {
    # aioresponses refuses an unmatched request with the full URL in the message.
    "refused connection": ({}, FlickrUnavailableError),
    "connection error": (
        {"exception": aiohttp.ClientConnectionError(f"Cannot connect to {API}?api_key={KEY}")},
        FlickrUnavailableError,
    ),
    "response error 503": ({"exception": response_error_with_key(503)}, FlickrUnavailableError),
    "response error 403": ({"exception": response_error_with_key(403)}, FlickrError),
    "HTML echoing the url": (
        {"body": f"<html>Error for {API}?api_key={KEY}&page=1</html>", "content_type": "text/html"},
        FlickrUnavailableError,
    ),
    "invalid key echoing it": (
        {"payload": fail(100, f"Invalid API Key (Key {KEY} has expired)")},
        FlickrAuthError,
    ),
    "fail message echoing it": (
        {"payload": fail(3, f'No search criteria for {{"api_key": "{KEY}"}}')},
        FlickrError,
    ),
}


@pytest.mark.parametrize(("fault", "error"), LEAKY_FAULTS.values(), ids=LEAKY_FAULTS.keys())
async def test_the_key_never_leaks(session, mocked, caplog, fault, error):
    caplog.set_level(logging.DEBUG)
    if fault:
        mocked.get(API_RE, repeat=True, **fault)
    client = make_client(session)
    with pytest.raises(error) as info:
        await client.call("flickr.photos.search", tags="fox")
    assert client.calls >= 1
    assert caplog.records  # the requests and retries were logged...
    assert_no_key(caplog.text, repr(client), *exception_texts(info.value))  # ...without the key


async def test_search_logs_are_redacted(session, mocked, caplog):
    caplog.set_level(logging.DEBUG)
    mocked.get(API_RE, callback=FakeFlickr([T0] * 30), repeat=True)
    await walk(ClassSearch(make_client(session), FOX, settings(10), max_side=240, start=T0, end=T0))
    assert "flickr.photos.search" in caplog.text
    assert_no_key(caplog.text)


@pytest.mark.parametrize(
    "text",
    [
        f"GET https://api.flickr.com/services/rest/?method=x&api_key={KEY}&page=2",
        f"api_key={KEY}&oauth_token=72157-abc&oauth_signature=tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D",
        f'{{"api_key": "{KEY}", "api_secret": "s3cr3t0123456789"}}',
        f"{{'oauth_consumer_key': '{KEY}'}}",
        f'Authorization: OAuth oauth_consumer_key="{KEY}", oauth_signature="abc%2B%3D"',
        f"API_KEY={KEY}",
    ],
)
def test_redact_forms(text):
    out = redact(text)
    assert_no_key(out)
    for secret in ("72157-abc", "tR3%2BTy", "s3cr3t", "abc%2B"):
        assert secret not in out
    assert "REDACTED" in out


def test_redact_keeps_help_text_and_other_params():
    assert "export API_KEY=..." in redact("set API_KEY (export API_KEY=...)")
    assert redact("method=flickr.photos.search&api_key=abc&page=3") == (
        "method=flickr.photos.search&api_key=REDACTED&page=3"
    )


def test_the_client_redacts_its_own_key_anywhere(session):
    client = make_client(session)
    assert client.redact(f"weird place {KEY}!") == "weird place REDACTED!"
    assert KEY not in repr(client)


# -- parsing ----------------------------------------------------------------------------------


def test_search_page_coerces_numbers_sent_as_strings():
    page = SearchPage.from_response(
        {
            "photos": {
                "page": "2",
                "pages": "20601",
                "perpage": "10",
                "total": "206004",
                "photo": [{"id": "1"}, "junk"],
            },
            "stat": "ok",
        }
    )
    assert (page.page, page.pages, page.perpage, page.total) == (2, 20_601, 10, 206_004)
    assert page.photos == [{"id": "1"}]


def test_search_page_without_photos_is_an_error():
    with pytest.raises(FlickrError):
        SearchPage.from_response({"stat": "ok"})


def test_candidate_from_a_photo_with_strings():
    photo = photo_json(Photo("53790112233", T0))
    candidate = candidate_from_photo(photo, "fox", 240)
    assert candidate == Candidate(
        photo_id="53790112233",
        label="fox",
        url="https://live.staticflickr.test/65535/53790112233_a1b2c3d4e5_m.jpg",
        width=240,
        height=180,
        owner="12345678@N05",
        ownername="Jane Example",
        title="fox 53790112233",
        license=4,
        date_upload=T0,
    )
    assert candidate.photo_page == "https://www.flickr.com/photos/12345678@N05/53790112233"


def test_candidate_when_urls_are_missing():
    photo = {"id": "1", "owner": "o", "title": "t"}
    assert candidate_from_photo(photo, "fox", 240) is None
    assert candidate_from_photo({"url_s": "https://x.test/a_m.jpg"}, "fox", 240) is None  # no id
    only_medium = {**photo, "url_m": "https://x.test/1_s.jpg", "width_m": "500", "height_m": "333"}
    candidate = candidate_from_photo(only_medium, "fox", 240)
    assert candidate is not None
    assert (candidate.url, candidate.width, candidate.height) == (
        "https://x.test/1_s.jpg",
        500,
        333,
    )
    assert (candidate.license, candidate.date_upload, candidate.ownername) == (0, 0, "")


def sized(*keys: str) -> dict[str, Any]:
    longest = {"s": 240, "n": 320, "m": 500, "z": 640, "c": 800, "l": 1024, "o": 4000, "t": 100}
    photo: dict[str, Any] = {"id": "1"}
    for key in keys:
        w = longest[key]
        photo |= {f"url_{key}": f"u_{key}", f"width_{key}": str(w), f"height_{key}": w * 3 // 4}
    return photo


ALL_SIZES = ("s", "n", "m", "z", "c", "l", "o", "t")


@pytest.mark.parametrize(
    ("photo", "max_side", "expected"),
    [
        (sized(*ALL_SIZES), 240, ("u_s", 240, 180)),  # 240 px is url_s (suffix _m)
        (sized(*ALL_SIZES), 500, ("u_m", 500, 375)),  # ...and url_m is the 500 px one
        (sized(*ALL_SIZES), 300, ("u_n", 320, 240)),
        (sized(*ALL_SIZES), 1000, ("u_l", 1024, 768)),
        (sized(*ALL_SIZES), 5000, ("u_o", 4000, 3000)),  # none big enough: the largest
        (sized("s", "n"), 640, ("u_n", 320, 240)),
        (sized("t"), 240, ("u_t", 100, 75)),  # a thumbnail only as the last resort
        (sized("t", "s"), 50, ("u_s", 240, 180)),
        ({"id": "1", "url_sq": "sq", "url_q": "q"}, 75, None),  # square crops never
        ({"id": "1"}, 240, None),
        ({"url_z": "z", "url_s": "s"}, 300, ("z", 640, 640)),  # no dims: the nominal size
        ({"url_o": "o", "url_l": "l", "width_l": 1024, "height_l": 768}, 2000, ("o", 0, 0)),
        ({"url_n": "n", "width_n": "", "height_n": None}, 240, ("n", 320, 320)),
    ],
)
def test_choose_size(photo, max_side, expected):
    assert choose_size(photo, max_side) == expected


def test_choose_size_uses_real_dims_over_the_nominal_table():
    # A small original: url_z exists at its real 600 px, url_m at 500.
    photo = {"url_m": "m", "width_m": 500, "height_m": 300, "url_z": "z", "width_z": "600"}
    photo["height_z"] = "360"
    assert choose_size(photo, 550) == ("z", 600, 360)


async def test_license_names_from_flickr(session, mocked):
    mocked.get(
        API_RE,
        payload={
            "licenses": {
                "license": [
                    {"id": "4", "name": "CC BY 2.0", "url": "https://creativecommons.org/"},
                    {"id": "0", "name": "All Rights Reserved", "url": ""},
                    {"id": "17", "name": "Some Future License", "url": ""},
                ]
            },
            "stat": "ok",
        },
    )
    names = await license_names(make_client(session))
    assert names[4] == "CC BY 2.0" and names[17] == "Some Future License"
    assert names[16] == LICENSES[16] == "CC BY-NC-ND 4.0"


async def test_license_names_fall_back_to_the_table(session, mocked):
    mocked.get(API_RE, payload=fail(112, "Method not found"))
    assert await license_names(make_client(session)) == LICENSES
    mocked.get(API_RE, payload=fail(100, "Invalid API Key"))
    with pytest.raises(FlickrAuthError):
        await license_names(make_client(session))


def test_license_table_covers_0_to_16():
    assert sorted(LICENSES) == list(range(17))
    assert LICENSES[9] == "Public Domain Dedication (CC0)"


# -- the rate limiter -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "calls_per_hour", [2, 59, 60, 100, 600, 1_199, 1_200, 3_600, 36_000, 10**7]
)
def test_limiter_never_exceeds_the_hourly_budget_in_any_minute(calls_per_hour):
    burst, rate = limiter_parameters(calls_per_hour)
    assert 1 <= burst <= 10
    assert rate > 0
    if calls_per_hour > 60:
        # A leaky bucket admits at most burst + 60·rate calls in any 60 s window.
        assert burst + 60 * rate <= calls_per_hour / 60 + 1e-9
    # ...and so at most this many in any hour.
    assert burst + 3600 * rate <= calls_per_hour + 1e-9


def test_limiter_numbers_for_the_flickr_budget(session):
    client = make_client(session, calls_per_hour=3_600)
    assert (client.burst, client.rate_per_s) == (6, pytest.approx(0.9))
    assert client.max_calls_per_minute == pytest.approx(60)
    assert client.limiter.max_rate == 6
    assert client.limiter.time_period == pytest.approx(6 / 0.9)


async def test_one_limiter_paces_every_attempt_of_concurrent_callers(session, mocked):
    # 36,000/h: burst 10, then 590/60 ≈ 9.83 calls/s. Fifteen concurrent callers, five of whose
    # attempts fail and are retried: twenty requests, the last ten paced ≈ 0.1 s apart.
    client = make_client(session, calls_per_hour=36_000)
    assert client.burst == 10
    # The bucket drains at exactly rate_per_s, so it paces no harder than the budget needs
    # (how long the paced calls take in practice: benchmarks/bench_budgets.py).
    assert client.limiter.max_rate == 10
    assert client.limiter.time_period == pytest.approx(10 / client.rate_per_s)
    for _ in range(5):
        mocked.get(API_RE, payload=fail(105))
    mocked.get(API_RE, payload=OK, repeat=True)
    started = time.monotonic()
    await asyncio.gather(*(client.call("flickr.test.echo") for _ in range(15)))
    elapsed = time.monotonic() - started
    assert client.calls == 20
    assert elapsed >= 0.95 * (20 - client.burst) / client.rate_per_s  # paced: never faster
