"""Riding out a failing etcd member: which errors are transient, and how long to keep trying.

A GC pause, a node drain or a rolling upgrade takes one member away for a few
seconds while the others keep quorum and elect a leader. Every call the lock
makes while getting in line and waiting is safe to repeat (the enqueue is a
``create == 0`` transaction, reads and deletes are idempotent, a lease granted
twice leaves one that expires unused), so a transient error is retried with
exponential back-off and jitter; the client's channel balances across members,
so a retry reaches another one. Retrying stops at the :class:`Budget`: the
job's deadline, or, for a job without a timeout, a cluster unavailable for
:data:`UNAVAILABLE_LIMIT` seconds in a row; a pause that would pass it is cut
short, so that the last attempt comes just before it ends. Errors that repeating cannot fix
(bad credentials, invalid arguments) are raised at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pgquartz.runner.lock.errors import EtcdRefused, EtcdUnavailable

UNAVAILABLE_LIMIT = 300.0
"""Without a job timeout: how long etcd may stay unusable before the attempt to lock gives up."""

FIRST_DELAY = 0.05
MAX_DELAY = 1.0

TRANSIENT: tuple[type[BaseException], ...] = (
    EtcdUnavailable,  # members down or paused, "request timed out", "leader changed", names not resolving
    TimeoutError,
    OSError,
)

T = TypeVar("T")


class GaveUp(Exception):
    """etcd stayed unusable for the whole budget; the message carries the last error."""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT) and not isinstance(error, EtcdRefused)


def delay(attempt: int, rng: random.Random) -> float:
    """Exponential back-off with jitter: about 50 ms, 100 ms, … capped at 1 s."""
    ceiling = min(MAX_DELAY, FIRST_DELAY * 2**attempt)
    return rng.uniform(ceiling / 2, ceiling)


LAST_ATTEMPT = 0.1
"""Seconds left before a budget ends that are still worth one more attempt."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """When to stop retrying: at ``deadline`` (monotonic), else after ``limit`` s of failures in a row."""

    deadline: float | None = None
    limit: float = UNAVAILABLE_LIMIT

    def give_up_at(self, first_failure: float) -> float:
        return self.deadline if self.deadline is not None else first_failure + self.limit


async def call(
    operation: Callable[[], Awaitable[T]],
    *,
    budget: Budget,
    on_retry: Callable[[BaseException, int], None] = lambda error, attempt: None,
    rng: random.Random | None = None,
) -> T:
    """``operation()``, repeated after transient errors until it succeeds or the budget is spent."""
    rng = rng or random.Random()
    first_failure: float | None = None
    attempt = 0
    while True:
        try:
            if budget.deadline is None:
                return await operation()
            return await asyncio.wait_for(operation(), timeout=max(0.01, budget.deadline - time.monotonic()))
        except Exception as error:
            if not is_transient(error):
                raise
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            give_up_at = budget.give_up_at(first_failure)
            if now >= give_up_at - LAST_ATTEMPT:
                raise GaveUp(
                    f"etcd unusable for {now - first_failure:.1f}s, retried {attempt} times"
                    f" (last error: {describe(error)})"
                ) from error
            attempt += 1
            on_retry(error, attempt)
            # The budget is used to its end: a pause that would pass it is cut short for one last try.
            await asyncio.sleep(min(delay(attempt - 1, rng), give_up_at - LAST_ATTEMPT - now))


def describe(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, OSError) or not text:
        return f"etcd is unreachable ({type(error).__name__}{': ' + text if text else ''})"
    return text
