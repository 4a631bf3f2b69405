"""aioresponses 0.7.9 under aiohttp 3.14: the shims the unit tests need (one place)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import StreamReader
from aiohttp.client_proto import ResponseHandler
from aioresponses import aioresponses


class MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class Mocked(aioresponses):
    """aioresponses building its responses with :class:`MockResponse`."""

    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:
        kwargs.setdefault("response_class", MockResponse)
        super().add(url, method, **kwargs)


def roomy_stream_reader(loop: Any = None) -> StreamReader:
    """aioresponses' 64 KiB reader: a 500-photo page overflows it and, under aiohttp 3.14, pausing
    its parser-less protocol fails an assertion. A reader this large never pauses."""
    return StreamReader(ResponseHandler(loop=loop), limit=2**24, loop=loop)
