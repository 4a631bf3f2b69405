from datetime import UTC, datetime

import pytest

from asyncds.retry import RetryPolicy, TransientError, parse_retry_after, retrying

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
