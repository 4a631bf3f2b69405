"""The one retry policy: every retried call in asyncds (Flickr API and image downloads) uses it.

Up to ``retries`` retries after the first attempt, exponential backoff with full jitter, and a
server's ``Retry-After`` honoured as a floor for the next wait. Only *transient* faults are
retried: callers translate what they see (``stat: fail`` 105, HTTP 503, ...) into
:class:`TransientError`; anything else propagates at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: ``retries`` after the first attempt, waits from ``backoff_s`` up."""

    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0


class TransientError(Exception):
    """A fault worth another try. ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Network-level faults aiohttp raises; none of their messages carries a query string.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    asyncio.TimeoutError,
)


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


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    # Exception texts are built by our own code from redacted data (see flickr.redact).
    log.info(
        "retrying after %s (attempt %d, waiting %.1fs)",
        f"{type(exc).__name__}: {exc}" if exc else "fault",
        state.attempt_number,
        wait,
    )


def retrying(policy: RetryPolicy) -> AsyncRetrying:
    """A fresh tenacity controller for one logical call.

    Use as ``await retrying(policy)(coro_fn, *args)`` or
    ``async for attempt in retrying(policy): with attempt: ...``.
    The last exception is re-raised unchanged when the retries are spent.
    """
    return AsyncRetrying(
        stop=stop_after_attempt(policy.retries + 1),
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
