"""Image servers that attack the client: decompression bombs, redirects to local files, a
host that dies mid-run. Each is bounded or refused, and an unreachable host is reported as
such (the run's outage logic keys on it), not as an ordinary failure."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncds.fetch import FetchStatus, ImageHosts, fetch_image
from asyncds.outage import HostWatch
from asyncds.retry import RetryPolicy

FAST = RetryPolicy(retries=2, backoff_s=0.001, max_backoff_s=0.01)
MAX_BYTES = 256 * 1024
# 64 MiB of zeros compress to about 64 kB: a client that inflates before its cap holds them all.
BOMB = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)


async def _bomb(request: web.Request) -> web.Response:
    return web.Response(
        body=BOMB, headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"}
    )


async def _to_file(request: web.Request) -> web.Response:
    raise web.HTTPFound("file:///etc/passwd")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/bomb.jpg", _bomb)
    app.router.add_get("/to-file.jpg", _to_file)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


async def _get(url: str, **kwargs):
    async with aiohttp.ClientSession() as session:
        return await fetch_image(
            session,
            url,
            max_bytes=MAX_BYTES,
            timeout_s=5,
            retry=FAST,
            hosts=ImageHosts.for_api("http://127.0.0.1/services/rest/"),
            **kwargs,
        )


async def test_a_gzip_bomb_is_cut_at_the_byte_cap(server):
    assert len(BOMB) < MAX_BYTES  # only the inflated body crosses the cap
    result = await _get(str(server.make_url("/bomb.jpg")))
    assert result.status == FetchStatus.TOO_LARGE and result.data is None
    assert "stopped reading" in result.reason


async def test_a_redirect_to_a_local_file_is_refused(server):
    result = await _get(str(server.make_url("/to-file.jpg")))
    assert result.status != FetchStatus.OK and result.data is None
    assert "root:" not in result.reason


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_refused_connection_names_the_unreachable_host():
    watch = HostWatch(outage_s=30)
    result = await _get(f"http://127.0.0.1:{_free_port()}/x.jpg", watch=watch)
    assert result.status == FetchStatus.NETWORK_ERROR
    assert result.unreachable_host == "127.0.0.1"
    assert result.attempts == 3  # still retried: a refused connection may be a blip
    assert not watch.reached_since("127.0.0.1", 0.0)


async def test_an_answer_of_any_status_counts_as_reaching_the_host(server):
    watch = HostWatch(outage_s=30)
    result = await _get(str(server.make_url("/missing.jpg")), watch=watch)
    assert result.status == FetchStatus.HTTP_ERROR and not result.unreachable_host
    assert watch.reached_since("127.0.0.1", 0.0)
