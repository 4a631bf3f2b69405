"""fetch.fetch_image against a real aiohttp server on 127.0.0.1 (and aioresponses for a lie),
and against the Flickr emulator, counting the requests each fault costs.

Routes take ``/<kind>/<times>/<name>``: the first ``times`` requests to that exact path show
the fault, later ones serve a good JPEG, so a test can fail N times and then succeed.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from PIL import Image
from yarl import URL

from asyncds import fetch
from asyncds.config import DEFAULT_API_URL
from asyncds.emulator import EmulatorSettings, FaultProfile, running_emulator
from asyncds.fetch import FetchResult, FetchStatus, ImageHosts, fetch_image, sniff_image_type
from asyncds.retry import CONTENT_FAULT_ATTEMPTS, TIMEOUT_ATTEMPTS, RetryPolicy
from asyncds.state import Status
from tests.aiomock import MockResponse

FAST = RetryPolicy(retries=5, backoff_s=0.001, max_backoff_s=0.01)
MAX_BYTES = 256 * 1024
TIMEOUT_S = 2.0
STALL_TIMEOUT_S = 0.15
PLACEHOLDER_PATH = "/pw/images/en-us/photo_unavailable.png"
# What a run against Flickr allows; the local servers' host is added where they are used.
FLICKR_HOSTS = ImageHosts.for_api(DEFAULT_API_URL)
LOCAL_HOSTS = ImageHosts.for_api("http://127.0.0.1/services/rest/")


def _encode(color: tuple[int, int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(out, fmt)
    return out.getvalue()


JPEG = _encode((200, 40, 40), "JPEG")
PNG = _encode((40, 200, 40), "PNG")
PLACEHOLDER_PNG = _encode((128, 128, 128), "PNG")


class Cdn:
    """A tiny image CDN with fault injection; ``hits`` counts requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.endless_chunks = 0
        self.stalled = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/ok.jpg", self.ok_jpeg)
        self.app.router.add_get("/ok.png", self.ok_png)
        self.app.router.add_get("/status/{code}/{times}/{name}", self.status)
        self.app.router.add_get("/throttle/{times}/{name}", self.throttle)
        self.app.router.add_get("/truncate/{times}/{name}", self.truncate)
        self.app.router.add_get("/stall/{times}/{name}", self.stall)
        self.app.router.add_get("/trickle.jpg", self.trickle)
        self.app.router.add_get("/redirect", self.redirect_to_query)
        self.app.router.add_get("/html/{times}/{name}", self.html)
        self.app.router.add_get("/typed/{ctype:.+}/img", self.typed)
        self.app.router.add_get("/deleted.jpg", self.redirect(PLACEHOLDER_PATH))
        self.app.router.add_get(
            "/deleted-remote.jpg",
            self.redirect("https://s.yimg.com/pw/images/en-us/photo_unavailable_l.png"),
        )
        self.app.router.add_get("/moved.jpg", self.redirect("/ok.jpg"))
        self.app.router.add_get("/loop.jpg", self.redirect("/loop.jpg"))
        self.app.router.add_get(PLACEHOLDER_PATH, self.placeholder)
        self.app.router.add_get("/lookalike.png", self.placeholder)
        self.app.router.add_get("/huge-declared.jpg", self.huge_declared)
        self.app.router.add_get("/endless.jpg", self.endless)
        self.app.middlewares.append(self.count)

    @web.middleware
    async def count(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        self.hits[request.path] += 1
        return await handler(request)

    def failing(self, request: web.Request) -> bool:
        return self.hits[request.path] <= int(request.match_info["times"])

    async def ok_jpeg(self, request: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def ok_png(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def status(self, request: web.Request) -> web.Response:
        if self.failing(request):
            return web.Response(status=int(request.match_info["code"]), text="nope")
        return await self.ok_jpeg(request)

    async def throttle(self, request: web.Request) -> web.Response:
        if self.failing(request):
            return web.Response(status=429, text="Too Many", headers={"Retry-After": "0.05"})
        return await self.ok_jpeg(request)

    async def truncate(self, request: web.Request) -> web.StreamResponse:
        if not self.failing(request):
            return await self.ok_jpeg(request)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(JPEG)
        await resp.prepare(request)
        await resp.write(JPEG[: len(JPEG) // 2])
        assert request.transport is not None
        request.transport.close()  # hang up mid-body, as a reset CDN edge does
        return resp

    async def stall(self, request: web.Request) -> web.StreamResponse:
        if not self.failing(request):
            return await self.ok_jpeg(request)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(JPEG)
        await resp.prepare(request)
        await resp.write(JPEG[:10])
        self.stalled.set()
        await asyncio.sleep(30)  # cancelled when the client gives up and disconnects
        return resp

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 100_000  # within MAX_BYTES: the body is read, not refused
        await resp.prepare(request)
        await resp.write(JPEG[:3])
        for _ in range(600):  # never idle for long, never done: only the total bound ends it
            await asyncio.sleep(0.02)
            await resp.write(b"\0")
        return resp

    async def redirect_to_query(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def html(self, request: web.Request) -> web.Response:
        if self.failing(request):
            return web.Response(text="<html><h1>Service busy</h1></html>", content_type="text/html")
        return await self.ok_jpeg(request)

    async def typed(self, request: web.Request) -> web.Response:
        ctype = request.match_info["ctype"]
        body = b"<svg xmlns='http://www.w3.org/2000/svg'/>" if "svg" in ctype else JPEG
        return web.Response(body=body, headers={"Content-Type": ctype})

    @staticmethod
    def redirect(location: str) -> web.Handler:
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(location)

        return handler

    async def placeholder(self, request: web.Request) -> web.Response:
        return web.Response(body=PLACEHOLDER_PNG, content_type="image/png")

    async def huge_declared(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 50 * 1024 * 1024
        await resp.prepare(request)
        await resp.write(JPEG)
        await asyncio.sleep(30)  # a client that reads on would time out, not finish
        return resp

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(JPEG[:3])
        while True:  # no Content-Length and no end: only the cap can stop the reader
            await resp.write(b"\0" * 16384)
            self.endless_chunks += 1
            await asyncio.sleep(0.001)


@pytest.fixture
async def cdn() -> AsyncIterator[tuple[Cdn, TestServer]]:
    state = Cdn()
    server = TestServer(state.app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield state, server
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(autouse=True)
def _isolated_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "PLACEHOLDER_SHA256", set(fetch.PLACEHOLDER_SHA256))


async def get(
    session: aiohttp.ClientSession,
    server: TestServer,
    path: str,
    *,
    max_bytes: int = MAX_BYTES,
    timeout_s: float = TIMEOUT_S,
    idle_timeout_s: float | None = None,
    retry: RetryPolicy = FAST,
    hosts: ImageHosts = LOCAL_HOSTS,
) -> FetchResult:
    url = str(server.make_url(path))
    async with asyncio.timeout(10):  # a hang is a failure, not a stuck suite
        return await fetch_image(
            session,
            url,
            max_bytes=max_bytes,
            timeout_s=timeout_s,
            idle_timeout_s=idle_timeout_s,
            retry=retry,
            hosts=hosts,
        )


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "ctype"), [("/ok.jpg", JPEG, "image/jpeg"), ("/ok.png", PNG, "image/png")]
)
async def test_ok_image(cdn, session, path, body, ctype):
    state, server = cdn
    result = await get(session, server, path)
    assert result.status == FetchStatus.OK and result.ok
    assert result.data == body
    assert result.content_type == ctype
    assert result.final_url == str(server.make_url(path))
    assert result.attempts == 1


async def test_ordinary_redirect_is_followed(cdn, session):
    state, server = cdn
    result = await get(session, server, "/moved.jpg")
    assert result.status == FetchStatus.OK
    assert result.final_url == str(server.make_url("/ok.jpg"))
    assert result.attempts == 1


async def test_octet_stream_with_image_bytes_is_accepted_by_magic(cdn, session):
    state, server = cdn
    result = await get(session, server, "/typed/application/octet-stream/img")
    assert result.status == FetchStatus.OK
    assert result.content_type == "image/jpeg"


def test_magic_bytes():
    assert sniff_image_type(JPEG) == "image/jpeg"
    assert sniff_image_type(PNG) == "image/png"
    assert sniff_image_type(b"GIF89a....") == "image/gif"
    assert sniff_image_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"<html>") is None
    assert sniff_image_type(b"") is None


# --- permanent HTTP errors -----------------------------------------------------------------


@pytest.mark.parametrize("code", [403, 404, 410])
async def test_permanent_status_is_not_retried(cdn, session, code):
    state, server = cdn
    path = f"/status/{code}/99/x.jpg"
    result = await get(session, server, path)
    assert result.status == FetchStatus.HTTP_ERROR
    assert str(code) in result.reason and "not retried" in result.reason
    assert result.attempts == 1 and state.hits[path] == 1
    assert result.data is None


# --- transient HTTP errors -----------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_server_error_twice_then_ok(cdn, session, code):
    state, server = cdn
    path = f"/status/{code}/2/x.jpg"
    result = await get(session, server, path)
    assert result.status == FetchStatus.OK
    assert result.data == JPEG
    assert result.attempts == 3 and state.hits[path] == 3


async def test_server_error_forever_spends_the_retries(cdn, session):
    state, server = cdn
    path = "/status/503/99/x.jpg"
    result = await get(session, server, path)
    assert result.status == FetchStatus.HTTP_ERROR
    assert "503" in result.reason and "retries spent" in result.reason
    assert result.attempts == 6 and state.hits[path] == 6


async def test_429_retry_after_is_honoured(cdn, session):
    state, server = cdn
    # max_backoff_s caps the Retry-After floor, so give it room above the 0.05 s asked for.
    policy = RetryPolicy(retries=5, backoff_s=0.001, max_backoff_s=1.0)
    start = time.monotonic()
    result = await get(session, server, "/throttle/1/x.jpg", retry=policy)
    elapsed = time.monotonic() - start
    assert result.status == FetchStatus.OK
    assert result.attempts == 2
    assert elapsed >= 0.05


async def test_status_codes_via_aioresponses(session):
    url = "https://live.staticflickr.com/65535/1_abc_m.jpg"
    with aioresponses() as mocked:
        mocked.get(url, status=502, response_class=MockResponse)
        mocked.get(url, body=JPEG, content_type="image/jpeg", response_class=MockResponse)
        result = await fetch_image(
            session, url, max_bytes=MAX_BYTES, timeout_s=1, retry=FAST, hosts=FLICKR_HOSTS
        )
    assert result.status == FetchStatus.OK and result.attempts == 2


# --- network faults ------------------------------------------------------------------------


async def test_truncated_twice_then_ok(cdn, session):
    state, server = cdn
    result = await get(session, server, "/truncate/2/x.jpg")
    assert result.status == FetchStatus.OK
    assert result.data == JPEG
    assert result.attempts == 3


async def test_truncated_forever_is_a_network_error(cdn, session):
    state, server = cdn
    result = await get(session, server, "/truncate/99/x.jpg")
    assert result.status == FetchStatus.NETWORK_ERROR
    assert "truncated" in result.reason and "retries spent" in result.reason
    assert result.attempts == 6


async def test_short_body_is_caught_even_when_aiohttp_does_not_raise(session):
    # aioresponses hands over the body without enforcing Content-Length: our own check must.
    url = "https://live.staticflickr.com/65535/2_abc_m.jpg"
    with aioresponses() as mocked:
        headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(JPEG))}
        mocked.get(url, body=JPEG[:100], headers=headers, repeat=True, response_class=MockResponse)
        result = await fetch_image(
            session, url, max_bytes=MAX_BYTES, timeout_s=1, retry=FAST, hosts=FLICKR_HOSTS
        )
    assert result.status == FetchStatus.NETWORK_ERROR
    assert f"100 of {len(JPEG)} bytes" in result.reason
    assert result.attempts == 6


async def test_stall_is_cut_by_the_idle_timeout_and_retried(cdn, session):
    state, server = cdn
    # The total bound (2 s) is far off: only the idle timeout can cut these stalls.
    result = await get(session, server, "/stall/2/x.jpg", idle_timeout_s=STALL_TIMEOUT_S)
    assert result.status == FetchStatus.OK
    assert result.attempts == 3 and state.hits["/stall/2/x.jpg"] == 3


async def test_stall_forever_is_a_network_error_after_three_attempts(cdn, session):
    state, server = cdn
    path = "/stall/99/x.jpg"
    result = await get(session, server, path, idle_timeout_s=STALL_TIMEOUT_S)
    assert result.status == FetchStatus.NETWORK_ERROR
    assert "stalled" in result.reason and "idle timeout" in result.reason
    assert "cap for this fault" in result.reason
    assert result.attempts == TIMEOUT_ATTEMPTS == 3 and state.hits[path] == 3


async def test_total_timeout_still_bounds_an_attempt_that_never_idles(cdn, session):
    state, server = cdn
    result = await get(session, server, "/trickle.jpg", timeout_s=0.3, idle_timeout_s=0.2)
    assert result.status == FetchStatus.NETWORK_ERROR
    assert "timed out (limit 0.3s per attempt)" in result.reason
    assert result.attempts == 3 and state.hits["/trickle.jpg"] == 3


async def test_stall_with_a_low_retries_setting_stops_at_retries(cdn, session):
    state, server = cdn
    policy = RetryPolicy(retries=1, backoff_s=0.001, max_backoff_s=0.01)
    path = "/stall/99/y.jpg"
    result = await get(session, server, path, idle_timeout_s=STALL_TIMEOUT_S, retry=policy)
    assert result.status == FetchStatus.NETWORK_ERROR and "retries spent" in result.reason
    assert result.attempts == 2 and state.hits[path] == 2


async def test_connection_refused_is_a_network_error(session):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.jpg"
    result = await fetch_image(
        session, url, max_bytes=MAX_BYTES, timeout_s=1, retry=FAST, hosts=LOCAL_HOSTS
    )
    assert result.status == FetchStatus.NETWORK_ERROR
    assert "cannot connect" in result.reason
    assert result.attempts == 6


async def test_invalid_url_is_reported_not_raised(session):
    hosts = ImageHosts.for_api("https://example.invalid/services/rest/")
    result = await fetch_image(
        session,
        "ftp://example.invalid/x.jpg",
        max_bytes=MAX_BYTES,
        timeout_s=1,
        retry=FAST,
        hosts=hosts,
    )
    assert result.status == FetchStatus.NETWORK_ERROR
    assert "URL" in result.reason
    assert result.attempts == 1


async def test_cancellation_propagates(cdn, session):
    state, server = cdn
    task = asyncio.create_task(get(session, server, "/stall/99/x.jpg", timeout_s=5))
    await asyncio.wait_for(state.stalled.wait(), 5)  # mid-body when cancelled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- content checks ------------------------------------------------------------------------


async def test_html_200_once_is_retried_then_ok(cdn, session):
    state, server = cdn
    result = await get(session, server, "/html/1/x.jpg")
    assert result.status == FetchStatus.OK and result.attempts == 2


@pytest.mark.parametrize("times", [2, 99])
async def test_html_200_twice_is_not_image_after_two_attempts(cdn, session, times):
    state, server = cdn
    path = f"/html/{times}/x.jpg"
    result = await get(session, server, path)
    assert result.status == FetchStatus.NOT_IMAGE
    assert "text/html" in result.reason and "cap for this fault" in result.reason
    assert result.content_type == "text/html"
    assert result.attempts == CONTENT_FAULT_ATTEMPTS == 2 and state.hits[path] == 2


async def test_content_cap_is_not_raised_by_more_retries(cdn, session):
    state, server = cdn
    policy = RetryPolicy(retries=20, backoff_s=0.001, max_backoff_s=0.01)
    path = "/html/99/many.jpg"
    result = await get(session, server, path, retry=policy)
    assert result.status == FetchStatus.NOT_IMAGE and state.hits[path] == 2


async def test_unsupported_image_format_is_not_retried(cdn, session):
    state, server = cdn
    result = await get(session, server, "/typed/image/svg+xml/img")
    assert result.status == FetchStatus.NOT_IMAGE
    assert result.attempts == 1


# --- the placeholder -----------------------------------------------------------------------


async def test_placeholder_redirect_is_unavailable_and_not_followed(cdn, session):
    state, server = cdn
    result = await get(session, server, "/deleted.jpg")
    assert result.status == FetchStatus.UNAVAILABLE
    assert "photo unavailable" in result.reason
    assert result.attempts == 1
    assert result.data is None
    assert state.hits[PLACEHOLDER_PATH] == 0  # decided from Location, body never fetched


async def test_placeholder_redirect_to_another_host_needs_no_network(cdn, session):
    state, server = cdn
    result = await get(session, server, "/deleted-remote.jpg")
    assert result.status == FetchStatus.UNAVAILABLE
    assert result.final_url.startswith("https://s.yimg.com/")


async def test_placeholder_bytes_at_an_ordinary_url(cdn, session):
    state, server = cdn
    assert (await get(session, server, "/lookalike.png")).status == FetchStatus.OK
    fetch.register_placeholder(PLACEHOLDER_PNG)
    result = await get(session, server, "/lookalike.png")
    assert result.status == FetchStatus.UNAVAILABLE
    assert result.attempts == 1


async def test_redirect_loop_is_an_http_error(cdn, session):
    state, server = cdn
    result = await get(session, server, "/loop.jpg")
    assert result.status == FetchStatus.HTTP_ERROR
    assert "redirects" in result.reason
    assert result.attempts == 1


# --- size cap ------------------------------------------------------------------------------


async def test_oversize_by_content_length_is_rejected_before_reading(cdn, session):
    state, server = cdn
    result = await get(session, server, "/huge-declared.jpg")
    # Awaiting the body (which never finishes) would have ended in a timeout, not this.
    assert result.status == FetchStatus.TOO_LARGE
    assert "Content-Length" in result.reason
    assert result.attempts == 1 and result.data is None


async def test_oversize_stream_stops_at_the_cap(cdn, session):
    state, server = cdn
    result = await get(session, server, "/endless.jpg", max_bytes=64 * 1024)
    assert result.status == FetchStatus.TOO_LARGE
    assert "stopped reading" in result.reason
    assert result.attempts == 1 and result.data is None
    # The connection was dropped, not drained: the server soon stops being able to write.
    written = state.endless_chunks
    await asyncio.sleep(0.1)
    assert state.endless_chunks <= written + 1


async def test_exactly_max_bytes_is_allowed(cdn, session):
    state, server = cdn
    result = await get(session, server, "/ok.jpg", max_bytes=len(JPEG))
    assert result.status == FetchStatus.OK
    assert (await get(session, server, "/ok.jpg", max_bytes=len(JPEG) - 1)).status == "too_large"


# --- logging -------------------------------------------------------------------------------


async def test_retries_log_at_debug_without_query(cdn, session, caplog):
    state, server = cdn
    caplog.set_level(logging.DEBUG)
    result = await get(session, server, "/status/503/1/x.jpg?sig=s3cret")
    assert result.status == FetchStatus.OK
    fetch_records = [r for r in caplog.records if r.name == "asyncds.fetch"]
    assert fetch_records and all(r.levelno == logging.DEBUG for r in fetch_records)
    assert not [r for r in caplog.records if r.name == "asyncds.retry"]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("asyncds")]
    assert not [m for m in ours if "s3cret" in m or "sig=" in m]


# --- host allowlist ------------------------------------------------------------------------


def test_image_hosts_allow_flickrs_cdn_and_the_api_host_only():
    hosts = ImageHosts.for_api("http://127.0.0.1:8080/services/rest/")
    for host in (
        "live.staticflickr.com",
        "farm66.staticflickr.com",
        "c1.staticflickr.com",
        "live.staticflickr.com.",  # the fully qualified spelling
        "127.0.0.1",  # the API's host, on any port
    ):
        assert hosts.allows(host), host
    for host in (
        "staticflickr.com.evil.example",
        "evilstaticflickr.com",
        "s.yimg.com",
        "localhost",
        "127.0.0.2",
        "api.flickr.com",  # not the configured API here
        "",
        None,
    ):
        assert not hosts.allows(host), host
    # Flickr's own API host is allowed when it is the configured one; yarl lower-cases hosts.
    assert FLICKR_HOSTS.allows("api.flickr.com")
    assert FLICKR_HOSTS.allows(URL("https://LIVE.StaticFlickr.com/1/2_3.jpg").raw_host)
    assert ImageHosts.for_api("http://[::1]:9/services/rest/").allows("::1")
    assert "*.staticflickr.com" in hosts.describe() and "127.0.0.1" in hosts.describe()


def test_every_fetch_status_is_a_state_status():
    assert {s.value for s in FetchStatus} <= {s.value for s in Status}


@pytest.fixture
async def other_host() -> AsyncIterator[tuple[Cdn, TestServer]]:
    """A second CDN on another loopback address: a different host that would answer."""
    state = Cdn()
    server = TestServer(state.app, host="127.0.0.2", port=0)
    await server.start_server()
    try:
        yield state, server
    finally:
        await server.close()


async def test_first_url_on_another_host_is_refused_without_a_request(session, other_host):
    other, other_server = other_host
    url = str(other_server.make_url("/ok.jpg"))
    result = await fetch_image(
        session, url, max_bytes=MAX_BYTES, timeout_s=1, retry=FAST, hosts=LOCAL_HOSTS
    )
    assert result.status == FetchStatus.HOST_NOT_ALLOWED
    assert "'127.0.0.2'" in result.reason and "not fetched" in result.reason
    assert result.attempts == 1 and result.data is None
    assert sum(other.hits.values()) == 0


async def test_redirect_to_another_host_is_refused_without_a_request(cdn, session, other_host):
    state, server = cdn
    other, other_server = other_host
    target = str(other_server.make_url("/ok.jpg"))
    path = f"/redirect?to={target}"
    result = await get(session, server, path)
    assert result.status == FetchStatus.HOST_NOT_ALLOWED
    assert "redirected to host '127.0.0.2'" in result.reason
    assert result.final_url == target
    assert state.hits["/redirect"] == 1 and sum(other.hits.values()) == 0
    # The same redirect with that host allowed is followed: the refusal was the check's doing.
    both = ImageHosts(LOCAL_HOSTS.names | {"127.0.0.2"}, LOCAL_HOSTS.suffixes)
    followed = await get(session, server, path, hosts=both)
    assert followed.status == FetchStatus.OK and other.hits["/ok.jpg"] == 1


async def test_redirect_off_the_cdn_is_refused_via_aioresponses(session):
    url = "https://live.staticflickr.com/65535/3_abc_m.jpg"
    with aioresponses() as mocked:
        mocked.get(
            url,
            status=302,
            headers={"Location": "https://tracker.example.com/x.jpg"},
            response_class=MockResponse,
        )
        result = await fetch_image(
            session, url, max_bytes=MAX_BYTES, timeout_s=1, retry=FAST, hosts=FLICKR_HOSTS
        )
        asked = {str(u) for _, u in mocked.requests}
    assert result.status == FetchStatus.HOST_NOT_ALLOWED
    assert "tracker.example.com" in result.reason
    assert asked == {url}  # the foreign hop was never requested


# --- against the emulator: what each fault costs in requests --------------------------------


async def _fetch_from_emulator(
    session: aiohttp.ClientSession, faults: FaultProfile, *, idle_timeout_s: float | None = None
) -> tuple[FetchResult, int]:
    """Fetch one photo's ``_t`` size (every photo has it) and count the requests it took."""
    async with running_emulator(EmulatorSettings(seed=2, faults=faults)) as emu:
        photo_id = int(emu.catalog.tag_ids("cat")[0])
        url = emu.image_url(photo_id, "t")
        async with asyncio.timeout(20):
            result = await fetch_image(
                session,
                url,
                max_bytes=MAX_BYTES,
                timeout_s=TIMEOUT_S * 5,
                idle_timeout_s=idle_timeout_s,
                retry=FAST,
                hosts=ImageHosts.for_api(emu.api_url),
            )
        return result, emu.stats.image_requests[url.removeprefix(emu.base_url)]


async def test_emulator_page_instead_of_image_is_requested_twice(session):
    result, requests = await _fetch_from_emulator(session, FaultProfile(image_html_200_always=1.0))
    assert result.status == FetchStatus.NOT_IMAGE
    assert requests == 2 and result.attempts == 2


async def test_emulator_stalled_image_is_requested_three_times(session):
    # A stall of 2 s, an idle timeout of 0.2 s and a total bound of 10 s: only the idle
    # timeout can end these attempts, and the timeout cap ends the retries.
    faults = FaultProfile(image_stall_always=1.0, stall_s=2.0)
    result, requests = await _fetch_from_emulator(session, faults, idle_timeout_s=0.2)
    assert result.status == FetchStatus.NETWORK_ERROR and "stalled" in result.reason
    assert requests == 3 and result.attempts == 3


@pytest.mark.parametrize(
    ("fault", "status"),
    [("image_404", FetchStatus.HTTP_ERROR), ("image_unavailable", FetchStatus.UNAVAILABLE)],
)
async def test_emulator_gone_image_is_requested_once(session, fault, status):
    result, requests = await _fetch_from_emulator(session, FaultProfile(**{fault: 1.0}))
    assert result.status == status
    assert requests == 1 and result.attempts == 1


async def test_emulator_transient_503_is_retried_to_success(session):
    # A transient fault fires on the first two attempts of a path at rate 1.
    result, requests = await _fetch_from_emulator(session, FaultProfile(image_http_503=1.0))
    assert result.status == FetchStatus.OK and result.data
    assert requests == 3 and result.attempts == 3
