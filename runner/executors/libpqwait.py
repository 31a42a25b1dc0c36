"""Waiting for a PostgreSQL session's socket through the runner's epoll rather than psycopg's waiter.

psycopg runs a query as a generator that yields whenever libpq would block,
saying whether it waits to read or to write. Its asyncio waiter
(``AsyncConnection.wait``) adds a reader to the loop for each wait, arms a
timer to wake up every 0.1 s, and removes both again: about 30 µs a query here,
for queries that take 70 µs on the server. :func:`run` drives the same
generator with one registration on the loop's epoll
(pgquartz.runner.executors.readiness) per wait and no timer; waiting to write,
which only a query larger than the socket's buffer does, goes through the
loop's own writer.

Cancellation is the caller's: a cancelled wait leaves the socket unwatched and
the query running; PostgresExecutor cancels it on the server and closes the
session, as it does after psycopg's own waits.

Most of a maintenance job's statements are answered in well under a
millisecond, and waiting for them through the loop (a future, a registration,
two turns of the loop) costs more CPU than the server spends on them. So when
nothing else of the runner's is waiting for input (no other session's socket,
no command's pipe), the answer is first waited for in place, with ``poll`` for
at most :data:`QUICK_WAIT`, as psql waits; a slower answer is then waited for
through the loop as before. The loop still gets a turn at least every
:data:`LOOP_TURN_EVERY` (signals, timers, the lock's keepalive, a cancellation),
so a run of thousands of quick statements never holds it longer than that.
"""

from __future__ import annotations

import asyncio
import select
import time
from typing import TypeVar

import psycopg
from psycopg import waiting
from psycopg.abc import PQGen

from pgquartz.runner.executors import readiness

Result = TypeVar("Result")


QUICK_WAIT = 0.001
"""Seconds an answer is waited for in place (the loop held) before waiting through the loop."""

LOOP_TURN_EVERY = 0.001
"""Seconds of answers waited for in place after which the loop is given a turn."""

_loop_turned = time.monotonic()
"""When a wait of this module last let the loop run."""


async def run(generator: PQGen[Result], fileno: int) -> Result:
    """Drive one of psycopg's libpq generators (``generators.execute``, ...) on socket ``fileno``."""
    global _loop_turned
    loop = asyncio.get_running_loop()
    watched = readiness.for_loop(loop)
    try:
        state = next(generator)
        if state == waiting.WAIT_R and watched.idle():
            poller = select.poll()
            poller.register(fileno, select.POLLIN)
            while state == waiting.WAIT_R and poller.poll(QUICK_WAIT * 1000):
                state = generator.send(waiting.READY_R)
    except StopIteration as stop:
        if time.monotonic() - _loop_turned >= LOOP_TURN_EVERY:
            await asyncio.sleep(0)
            _loop_turned = time.monotonic()
        result: Result = stop.value
        return result
    except OSError as error:  # as psycopg's waiter says it
        raise psycopg.OperationalError("connection socket closed") from error
    _loop_turned = time.monotonic()  # the wait below lets the loop run
    try:
        while True:
            future: asyncio.Future[int] = loop.create_future()
            reading, writing = state & waiting.WAIT_R, state & waiting.WAIT_W
            if reading:

                def readable(fd: int, future: asyncio.Future[int] = future) -> None:
                    # Unwatched at once: left to the waiting task, the socket (still readable)
                    # would make the loop's next turn, the one that resumes the task, dispatch it
                    # again.
                    watched.unwatch(fd)
                    if not future.done():
                        future.set_result(waiting.READY_R)

                watched.watch(fileno, readable)
            if writing:

                def writable(future: asyncio.Future[int] = future) -> None:
                    if not future.done():
                        future.set_result(waiting.READY_W)

                loop.add_writer(fileno, writable)
            try:
                ready = await future
            finally:
                if reading:
                    watched.unwatch(fileno)
                if writing:
                    loop.remove_writer(fileno)
            state = generator.send(ready)
    except StopIteration as stop:
        result = stop.value
        return result
    except OSError as error:  # as psycopg's waiter says it
        raise psycopg.OperationalError("connection socket closed") from error
