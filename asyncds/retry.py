"""The one retry policy: every retried call in asyncds (Flickr API and image downloads) uses it.

Up to ``retries`` retries after the first attempt, exponential backoff with full jitter, and a
server's ``Retry-After`` honoured as a floor for the next wait. Only *transient* faults are
retried: callers translate what they see (``stat: fail`` 105, HTTP 503, ...) into
:class:`TransientError`; anything else propagates at once.

Some faults are rarely cured by another try and each try of them is costly, so they have their
own cap on attempts in all, which ``retries`` never raises (a lower ``retries`` still wins):
a :class:`TransientError` may carry ``max_attempts`` (the download path gives an answer that is
not an image :data:`CONTENT_FAULT_ATTEMPTS`), and a bare timeout gets :data:`TIMEOUT_ATTEMPTS`
(a stalled download costs a whole idle timeout per try). A caller that wants the full policy for
its timeouts wraps them in a :class:`TransientError` without a cap, as the Flickr client does.
The stop looks at the fault of the attempt just made: once the call has made as many attempts as
that fault's cap, it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: ``retries`` after the first attempt, waits from ``backoff_s`` up."""

    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0


# Own caps, in attempts in all (docs/configuration.md, "Retries").
# An answer with status 200 whose body is not what was asked for (an HTML page for an image):
# one more try catches a CDN hiccup; a URL that keeps answering so will not change.
CONTENT_FAULT_ATTEMPTS: Final = 2
# A timed-out attempt (a download that stalls): each try costs a whole timeout.
TIMEOUT_ATTEMPTS: Final = 3


class TransientError(Exception):
    """A fault worth another try.

    ``retry_after`` is the server's hint in seconds, if any; ``max_attempts`` caps the attempts
    in all of a call whose latest try failed with this fault (None: the policy's ``retries``).
    """

    def __init__(
        self, message: str, retry_after: float | None = None, *, max_attempts: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.max_attempts = max_attempts


# Network-level faults aiohttp raises; none of their messages carries a query string.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    asyncio.TimeoutError,
)


# No connection was made at all (refused, a name that does not resolve, a connect timeout):
# the host may be down, which is not the fault of one request. The Flickr client names the API
# host; the image pipeline asks asyncds.outage whether an outage is under way.
NO_CONNECTION: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)


def no_connection_reason(exc: BaseException) -> str:
    """Why no connection was made, in words, without aiohttp's text (it may quote the URL)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or type(exc.os_error).__name__
    return "connect timed out"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def attempt_cap(exc: BaseException | None) -> int | None:
    """The fault's own cap on attempts in all, or None when only the policy's ``retries`` apply."""
    if isinstance(exc, TransientError):
        return exc.max_attempts
    if isinstance(exc, TimeoutError):  # includes aiohttp's connect and read timeouts
        return TIMEOUT_ATTEMPTS
    return None


class _StopAtFaultCap(stop_base):
    """Stop once the call has made as many attempts as the latest fault's own cap allows."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        cap = attempt_cap(outcome.exception() if outcome is not None else None)
        return cap is not None and retry_state.attempt_number >= cap


_STOP_AT_FAULT_CAP: Final = _StopAtFaultCap()


class _Wait:
    """Exponential jitter, raised to the server's Retry-After when it asks for longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_exponential_jitter(
            multiplier=policy.backoff_s, max=policy.max_backoff_s, jitter=policy.backoff_s
        )

    def __call__(self, state: RetryCallState) -> float:
        wait = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            wait = max(wait, min(float(hint), self._policy.max_backoff_s))
        return wait


def _describe(exc: BaseException | None) -> str:
    """Our own faults in their words; another exception with its type (its text may be empty)."""
    if exc is None:
        return "fault"
    if isinstance(exc, TransientError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    # Exception texts are built by our own code from redacted data (see flickr.redact).
    log.info(
        "retrying after %s (attempt %d, waiting %.1fs)",
        _describe(exc),
        state.attempt_number,
        wait,
    )


def retrying(policy: RetryPolicy) -> AsyncRetrying:
    """A fresh tenacity controller for one logical call.

    Use as ``await retrying(policy)(coro_fn, *args)`` or
    ``async for attempt in retrying(policy): with attempt: ...``.
    The last exception is re-raised unchanged when the retries (or the fault's own cap, see
    :func:`attempt_cap`) are spent.
    """
    return AsyncRetrying(
        stop=stop_after_attempt(policy.retries + 1) | _STOP_AT_FAULT_CAP,
        wait=_Wait(policy),
        retry=retry_if_exception_type(TRANSIENT_EXCEPTIONS),
        before_sleep=_log_retry,
        reraise=True,
    )


async def call_with_retries(
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[T]],
    *,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> T:
    """``await attempt()`` under ``policy``, building the tenacity controller only on a fault.

    For the hot path (one call per image): most calls succeed at once, and a controller costs
    more to build than the call itself. A transient fault on the first try hands over to
    :func:`retrying`, which sees that fault as its attempt 1, so the waits, the stop and the
    re-raise are exactly the policy's. ``before_sleep`` replaces the policy's INFO log line.
    """
    try:
        return await attempt()
    except TRANSIENT_EXCEPTIONS as exc:
        first: BaseException | None = exc

    async def replay_then_attempt() -> T:
        nonlocal first
        if first is not None:
            fault, first = first, None
            raise fault
        return await attempt()

    controller = retrying(policy)
    if before_sleep is not None:
        controller = controller.copy(before_sleep=before_sleep)
    return await controller(replay_then_attempt)
