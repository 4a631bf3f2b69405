"""One image download: host allowlist, size cap, status and content checks, the placeholder.

:func:`fetch_image` never raises for a per-image fault (only cancellation propagates): every
outcome is a :class:`FetchResult` whose ``status`` is one of :class:`FetchStatus` and whose
``reason`` says what happened in words. Transient faults (429, 5xx, timeouts, resets, truncated
bodies, a CDN error page served with 200) go through the one retry policy in
:mod:`asyncds.retry`, a page served with 200 for an image and a stalled body each under their own
cap there; permanent ones (404/410/other 4xx, the placeholder, an oversize body, a host outside
:class:`ImageHosts`) are reported at once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import aiohttp
from aiohttp import hdrs
from tenacity import RetryCallState
from yarl import URL

from asyncds.outage import HostWatch
from asyncds.retry import (
    CONTENT_FAULT_ATTEMPTS,
    NO_CONNECTION,
    RetryPolicy,
    TransientError,
    attempt_cap,
    call_with_retries,
    no_connection_reason,
    parse_retry_after,
)

log = logging.getLogger(__name__)


class FetchStatus(StrEnum):
    """What became of one download; the values are what state and summaries record."""

    OK = "ok"
    UNAVAILABLE = "unavailable"  # Flickr's deleted-photo placeholder
    HTTP_ERROR = "http_error"
    NOT_IMAGE = "not_image"
    TOO_LARGE = "too_large"
    NETWORK_ERROR = "network_error"
    HOST_NOT_ALLOWED = "host_not_allowed"  # refused without a request (ImageHosts)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of :func:`fetch_image`. ``data`` is set only when ``status`` is ``ok``.

    ``attempts`` counts tries of the retry loop; a redirect chain followed within one try
    counts once.
    """

    status: str
    reason: str
    data: bytes | None = None
    final_url: str = ""
    content_type: str = ""
    attempts: int = 1
    # Set when the last attempt could not connect to this host at all (refused, DNS failure,
    # connect timeout): maybe the image's fault, maybe an outage (asyncds.outage decides).
    unreachable_host: str = ""

    @property
    def ok(self) -> bool:
        return self.status == FetchStatus.OK


# The CDN redirects deleted photos (and missing sizes) to
# https://s.yimg.com/pw/images/en-us/photo_unavailable.png (or ..._l.png).
PLACEHOLDER_MARKER: Final = "photo_unavailable"

# sha256 hex digests of known placeholder images, for when one is served without a redirect.
# Starts empty: no verified digest of Flickr's own placeholder is on record, so the redirect is
# the primary signal; the emulator and tests add theirs with register_placeholder().
PLACEHOLDER_SHA256: set[str] = set()

_MAX_REDIRECTS: Final = 10
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES: Final = 64 * 1024
# Types some servers send for any binary file: the magic bytes decide.
_GENERIC_TYPES: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_SUPPORTED_TYPES: Final = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/gif", "image/webp"}
)


# Flickr's image CDN: live.staticflickr.com today, farm{N}.staticflickr.com in older answers.
FLICKR_IMAGE_DOMAIN: Final = "staticflickr.com"


@dataclass(frozen=True, slots=True)
class ImageHosts:
    """The hosts images may be fetched from: Flickr's CDN and the API's own host (any port).

    Search answers and redirects may point anywhere; a URL elsewhere is refused before any
    request. The API's host is allowed because the emulator and the benchmark's neutral server
    serve their images from it. Built once per run; :meth:`allows` is a set lookup and a suffix
    test on the host string yarl already parsed and lower-cased.
    """

    names: frozenset[str]
    suffixes: tuple[str, ...]  # each with its leading dot: ".staticflickr.com"

    @classmethod
    def for_api(cls, api_url: str) -> ImageHosts:
        """Flickr's CDN hosts and the host of ``api_url``."""
        try:
            api_host = URL(api_url).raw_host
        except (ValueError, TypeError):
            api_host = None
        names = {_bare(api_host)} if api_host else set()
        return cls(names=frozenset(names), suffixes=("." + FLICKR_IMAGE_DOMAIN,))

    def allows(self, host: str | None) -> bool:
        """Whether an image may be fetched from ``host`` (yarl's ``raw_host``, lower case)."""
        if not host:
            return False
        if host[-1] == ".":  # "live.staticflickr.com." is the same host
            host = host[:-1]
        return host in self.names or host.endswith(self.suffixes)

    def describe(self) -> str:
        """The allowed hosts in words, for a refusal's reason."""
        return ", ".join(["*" + s for s in self.suffixes] + sorted(self.names))


def _bare(host: str) -> str:
    return host.lower().rstrip(".")


def register_placeholder(data: bytes) -> str:
    """Treat an image with exactly these bytes as the placeholder; returns its sha256 digest."""
    digest = hashlib.sha256(data).hexdigest()
    PLACEHOLDER_SHA256.add(digest)
    return digest


def is_placeholder_url(url: URL | str) -> bool:
    """Whether ``url`` is (a variant of) Flickr's "photo unavailable" image."""
    path = url.path if isinstance(url, URL) else URL(url).path
    return PLACEHOLDER_MARKER in path.lower()


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of a JPEG, PNG, GIF or WebP by its magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class _RetryableFault(TransientError):
    """A transient fault, with the status and reason to record if the retries run out."""

    def __init__(
        self,
        status: FetchStatus,
        reason: str,
        *,
        retry_after: float | None = None,
        max_attempts: int | None = None,
        final_url: str = "",
        content_type: str = "",
    ) -> None:
        super().__init__(reason, retry_after=retry_after, max_attempts=max_attempts)
        self.status = status
        self.reason = reason
        self.final_url = final_url
        self.content_type = content_type


async def fetch_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    retry: RetryPolicy,
    hosts: ImageHosts,
    idle_timeout_s: float | None = None,
    watch: HostWatch | None = None,
) -> FetchResult:
    """Download one image, retrying transient faults under ``retry``; never raises for a fault.

    ``timeout_s`` bounds each attempt (connect, headers and body); ``idle_timeout_s`` (default:
    ``timeout_s``) bounds a wait for the next bytes, so a stalled body is cut early.
    ``max_bytes`` caps the body, which is streamed and abandoned as soon as the cap is crossed.
    The URL and every redirect hop must be on one of ``hosts``. ``watch`` learns whether
    the image's host answered (any HTTP status counts).
    """
    timeout = _timeout(timeout_s, idle_timeout_s)
    attempts = 0
    try:
        target = URL(url)  # parsed once; redirects and aiohttp reuse it
    except (ValueError, TypeError) as exc:
        return FetchResult(FetchStatus.NETWORK_ERROR, _describe(exc, timeout), attempts=0)

    async def attempt() -> FetchResult:
        nonlocal attempts
        attempts += 1
        return await _fetch_once(session, target, max_bytes=max_bytes, timeout=timeout, hosts=hosts)

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug(
            "fetch %s: attempt %d failed (%s); retrying in %.2fs",
            _display(target),
            state.attempt_number,
            _describe(exc, timeout),
            wait,
        )

    # The shared policy logs each retry at INFO with the exception text; per-image retries are
    # routine and aiohttp texts may carry full URLs, so log them here at DEBUG, query-free.
    try:
        result = await call_with_retries(retry, attempt, before_sleep=log_retry)
    except _RetryableFault as exc:
        if watch is not None:
            watch.reached(target.host or "")  # it answered, with an error
        return FetchResult(
            exc.status,
            f"{exc.reason}; {_gave_up(exc, attempts, retry)}",
            final_url=exc.final_url,
            content_type=exc.content_type,
            attempts=attempts,
        )
    except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        reason = f"{_describe(exc, timeout)}; {_gave_up(exc, attempts, retry)}"
        if isinstance(exc, NO_CONNECTION):
            host = target.host or ""
            return FetchResult(
                FetchStatus.NETWORK_ERROR, reason, attempts=attempts, unreachable_host=host
            )
        if watch is not None:
            watch.reached(target.host or "")
        return FetchResult(FetchStatus.NETWORK_ERROR, reason, attempts=attempts)
    except (aiohttp.ClientError, ValueError) as exc:
        # Not retried: an invalid or non-HTTP URL (also from a redirect), a malformed response.
        reason = _describe(exc, timeout)
        return FetchResult(FetchStatus.NETWORK_ERROR, reason, attempts=attempts)
    except Exception as exc:
        # The contract is "never raises for a per-image fault"; keep the pipeline running but
        # leave a trace, by type only (messages may quote the URL).
        log.warning("fetch %s: unexpected %s", _display(target), type(exc).__name__)
        reason = f"unexpected error: {type(exc).__name__}"
        return FetchResult(FetchStatus.NETWORK_ERROR, reason, attempts=attempts)
    if watch is not None:
        watch.reached(target.host or "")
    if attempts == 1:
        return result
    return dataclasses.replace(result, attempts=attempts)


def _gave_up(exc: BaseException, attempts: int, retry: RetryPolicy) -> str:
    """How the retries ended: the fault's own cap reached, or the policy's retries spent."""
    if attempts <= retry.retries and attempt_cap(exc) is not None:
        return f"still failing after {attempts} attempts, the cap for this fault"
    return f"still failing after {attempts} attempts, retries spent"


@functools.lru_cache(maxsize=8)
def _timeout(timeout_s: float, idle_timeout_s: float | None) -> aiohttp.ClientTimeout:
    # sock_read restarts with every chunk received: it is the idle bound; total bounds the try.
    idle = timeout_s if idle_timeout_s is None else min(idle_timeout_s, timeout_s)
    return aiohttp.ClientTimeout(total=timeout_s, sock_read=idle)


async def _fetch_once(
    session: aiohttp.ClientSession,
    url: URL,
    *,
    max_bytes: int,
    timeout: aiohttp.ClientTimeout,
    hosts: ImageHosts,
) -> FetchResult:
    """One attempt: follow redirects ourselves so a placeholder redirect is never followed and
    every hop's host is checked before it is asked."""
    current = url
    for hop in range(_MAX_REDIRECTS + 1):
        if is_placeholder_url(current):
            # Before the host check: Flickr's placeholder lives on s.yimg.com.
            return FetchResult(
                FetchStatus.UNAVAILABLE,
                f"Flickr's 'photo unavailable' placeholder ({current.path})",
                final_url=str(current),
            )
        if not hosts.allows(current.raw_host):
            return _host_refused(current, hosts, redirected=hop > 0)
        async with session.get(current, allow_redirects=False, timeout=timeout) as resp:
            if resp.status in _REDIRECT_STATUSES:
                location = resp.headers.get(hdrs.LOCATION)
                if not location:
                    return FetchResult(
                        FetchStatus.HTTP_ERROR,
                        f"{_http_text(resp)} without a Location header (not retried)",
                        final_url=str(resp.url),
                    )
                current = resp.url.join(URL(location))
                continue
            return await _read_response(resp, max_bytes)
    return FetchResult(
        FetchStatus.HTTP_ERROR,
        f"more than {_MAX_REDIRECTS} redirects (not retried)",
        final_url=str(current),
    )


def _host_refused(url: URL, hosts: ImageHosts, *, redirected: bool) -> FetchResult:
    where = "redirected to host" if redirected else "image URL on host"
    return FetchResult(
        FetchStatus.HOST_NOT_ALLOWED,
        f"{where} {url.raw_host!r}, not an allowed image host ({hosts.describe()}); not fetched",
        final_url=str(url),
    )


async def _read_response(resp: aiohttp.ClientResponse, max_bytes: int) -> FetchResult:
    """Classify a non-redirect response, streaming its body under the cap when it may be one."""
    final_url = str(resp.url)
    status = resp.status
    if status == 429 or status >= 500:
        raise _RetryableFault(
            FetchStatus.HTTP_ERROR,
            _http_text(resp),
            retry_after=parse_retry_after(resp.headers.get(hdrs.RETRY_AFTER)),
            final_url=final_url,
        )
    if not 200 <= status < 300:
        return FetchResult(
            FetchStatus.HTTP_ERROR, f"{_http_text(resp)} (not retried)", final_url=final_url
        )

    ctype = resp.content_type if hdrs.CONTENT_TYPE in resp.headers else ""
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        resp.close()  # drop the connection rather than drain a body we will not keep
        return FetchResult(
            FetchStatus.TOO_LARGE,
            f"Content-Length {declared} exceeds the cap of {max_bytes} bytes",
            final_url=final_url,
            content_type=ctype,
        )
    if not ctype.startswith("image/") and ctype not in _GENERIC_TYPES:
        # CDNs answer with an HTML error page and status 200 when they struggle: one more try
        # (a URL that keeps doing so will not change).
        resp.close()
        raise _RetryableFault(
            FetchStatus.NOT_IMAGE,
            f"HTTP {status} with content type {ctype!r}, not an image",
            max_attempts=CONTENT_FAULT_ATTEMPTS,
            final_url=final_url,
            content_type=ctype,
        )

    if declared is not None and not resp.headers.get(hdrs.CONTENT_ENCODING):
        # Within the cap by its declared length, and aiohttp reads no more than that: one
        # read, no chunk loop and no copy.
        body: bytes | bytearray = await resp.read()
    else:
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                resp.close()
                return FetchResult(
                    FetchStatus.TOO_LARGE,
                    f"body exceeds the cap of {max_bytes} bytes (stopped reading)",
                    final_url=final_url,
                    content_type=ctype,
                )
    # aiohttp raises ClientPayloadError for a short body; this also catches any path that does
    # not (a decoded body's length is not comparable, hence the Content-Encoding guard).
    if (
        declared is not None
        and len(body) < declared
        and not resp.headers.get(hdrs.CONTENT_ENCODING)
    ):
        raise _RetryableFault(
            FetchStatus.NETWORK_ERROR,
            f"body truncated: {len(body)} of {declared} bytes",
            final_url=final_url,
            content_type=ctype,
        )

    data = bytes(body)  # no copy when it is bytes already
    if PLACEHOLDER_SHA256 and hashlib.sha256(data).hexdigest() in PLACEHOLDER_SHA256:
        return FetchResult(
            FetchStatus.UNAVAILABLE,
            "body is a known 'photo unavailable' placeholder image",
            final_url=final_url,
            content_type=ctype,
        )
    sniffed = sniff_image_type(data)
    if sniffed is None:
        described = f"{len(data)}-byte body with content type {ctype or '(none)'!r}"
        if ctype.startswith("image/") and ctype not in _SUPPORTED_TYPES:
            # A real image in a format we do not handle (SVG, AVIF, ...): another try won't help.
            return FetchResult(
                FetchStatus.NOT_IMAGE,
                f"{described} is not a JPEG/PNG/GIF/WebP image (not retried)",
                final_url=final_url,
                content_type=ctype,
            )
        raise _RetryableFault(
            FetchStatus.NOT_IMAGE,
            f"{described} is not a JPEG/PNG/GIF/WebP image",
            max_attempts=CONTENT_FAULT_ATTEMPTS,
            final_url=final_url,
            content_type=ctype,
        )
    return FetchResult(
        FetchStatus.OK,
        f"{sniffed}, {len(data)} bytes",
        data=data,
        final_url=final_url,
        content_type=ctype if ctype.startswith("image/") else sniffed,
    )


def _http_text(resp: aiohttp.ClientResponse) -> str:
    return f"HTTP {resp.status} {resp.reason}" if resp.reason else f"HTTP {resp.status}"


def _display(url: URL) -> str:
    """The URL without query or fragment, for logs."""
    try:
        return str(url.with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid URL>"


def _describe(exc: BaseException | None, timeout: aiohttp.ClientTimeout) -> str:
    """A short, query-free description of a fault (aiohttp's own texts may quote the URL)."""
    if exc is None:
        return "fault"
    if isinstance(exc, _RetryableFault):
        return exc.reason
    if isinstance(exc, aiohttp.SocketTimeoutError) and timeout.sock_read is not None:
        return f"stalled: no data for {timeout.sock_read:g}s (idle timeout)"
    if isinstance(exc, TimeoutError):  # includes aiohttp's connect timeouts
        return f"timed out (limit {timeout.total:g}s per attempt)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "body truncated or malformed (connection closed mid-body)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({no_connection_reason(exc)})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
        return f"invalid or unsupported URL ({type(exc).__name__}, not retried)"
    return type(exc).__name__
