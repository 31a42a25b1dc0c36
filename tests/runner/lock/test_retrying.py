"""Retrying a failing etcd: transient errors are retried until the budget is spent, to its end."""

from __future__ import annotations

import random
import time

import pytest

from pgquartz.runner.lock import retrying
from pgquartz.runner.lock.errors import EtcdRefused


async def test_transient_errors_are_retried_until_the_end_of_the_budget() -> None:
    attempts: list[float] = []

    async def refused() -> None:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("nobody listens")

    deadline = time.monotonic() + 1.5
    with pytest.raises(retrying.GaveUp, match="last error: etcd is unreachable"):
        await retrying.call(refused, budget=retrying.Budget(deadline=deadline), rng=random.Random(7))
    # Back-off pauses grow towards a second: the one that would pass the deadline is cut short, so
    # the last attempt comes within LAST_ATTEMPT of it, not up to a whole pause before.
    assert attempts[-1] >= deadline - retrying.LAST_ATTEMPT - 0.05
    assert time.monotonic() < deadline + 0.5
    assert len(attempts) >= 4


async def test_an_error_retrying_cannot_fix_is_raised_at_once() -> None:
    attempts = 0

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise EtcdRefused("authentication failed")

    with pytest.raises(EtcdRefused):
        await retrying.call(refused, budget=retrying.Budget(deadline=time.monotonic() + 5))
    assert attempts == 1
