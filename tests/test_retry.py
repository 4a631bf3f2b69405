from datetime import UTC, datetime

import pytest

from asyncds import retry
from asyncds.retry import (
    TIMEOUT_ATTEMPTS,
    RetryPolicy,
    TransientError,
    call_with_retries,
    parse_retry_after,
    retrying,
)

FAST = RetryPolicy(retries=5, backoff_s=0.001, max_backoff_s=0.01)


async def test_transient_faults_are_retried_until_success():
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise TransientError("service unavailable")
        return "ok"

    assert await retrying(FAST)(flaky) == "ok"
    assert calls == 4


async def test_gives_up_after_five_retries_and_reraises():
    calls = 0

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down")

    with pytest.raises(TransientError, match="down"):
        await retrying(FAST)(always_down)
    assert calls == 6  # the first attempt and five retries


async def test_other_errors_are_not_retried():
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("permanent")

    with pytest.raises(ValueError):
        await retrying(FAST)(broken)
    assert calls == 1


async def test_retry_after_is_a_floor_for_the_wait():
    waits: list[float] = []
    policy = RetryPolicy(retries=1, backoff_s=0.001, max_backoff_s=0.05)
    controller = retrying(policy)
    controller.sleep = _record(waits)  # type: ignore[method-assign]

    async def throttled() -> None:
        raise TransientError("429", retry_after=0.04)

    with pytest.raises(TransientError):
        await controller(throttled)
    assert waits and waits[0] >= 0.04


def _record(waits: list[float]):
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return sleep


def test_parse_retry_after_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now=now) == 10.0


class _Counted:
    """An attempt that always fails with ``make()`` and counts its calls."""

    def __init__(self, make) -> None:
        self.make = make
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        raise self.make()


async def test_a_fault_with_its_own_cap_ends_the_call_there():
    attempt = _Counted(lambda: TransientError("not an image", max_attempts=2))
    with pytest.raises(TransientError, match="not an image"):
        await retrying(FAST)(attempt)
    assert attempt.calls == 2


async def test_a_bare_timeout_is_capped_at_three_attempts():
    attempt = _Counted(TimeoutError)
    with pytest.raises(TimeoutError):
        await call_with_retries(FAST, attempt)
    assert attempt.calls == TIMEOUT_ATTEMPTS == 3


async def test_a_timeout_wrapped_without_a_cap_keeps_the_full_policy():
    # As the Flickr client wraps its timeouts: API calls keep every retry.
    attempt = _Counted(lambda: TransientError("timed out"))
    with pytest.raises(TransientError):
        await call_with_retries(FAST, attempt)
    assert attempt.calls == 6


async def test_a_cap_never_raises_a_lower_retries_setting():
    attempt = _Counted(TimeoutError)
    with pytest.raises(TimeoutError):
        await retrying(RetryPolicy(retries=1, backoff_s=0.001))(attempt)
    assert attempt.calls == 2


async def test_the_cap_of_the_latest_fault_decides():
    faults = iter([TransientError("503"), TransientError("503"), TimeoutError()])
    attempt = _Counted(lambda: next(faults))
    with pytest.raises(TimeoutError):
        await call_with_retries(FAST, attempt)
    assert attempt.calls == 3  # the timeout came on the third attempt: its cap is reached


async def test_call_with_retries_builds_no_controller_when_the_first_try_succeeds(monkeypatch):
    def no_controller(policy: RetryPolicy) -> None:
        raise AssertionError("a controller was built on the success path")

    monkeypatch.setattr(retry, "retrying", no_controller)

    async def ok() -> str:
        return "ok"

    assert await call_with_retries(FAST, ok) == "ok"
