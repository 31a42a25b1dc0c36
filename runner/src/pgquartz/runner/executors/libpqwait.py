"""Waiting for a query's results on a libpq connection through the runner's epoll.

:func:`execute` sends what libpq has queued of a query and collects every
result it returns, waiting whenever libpq would block: to read with one
registration on the loop's epoll (pgquartz.runner.executors.readiness) per
wait and no timer (a driver's waiter that adds a reader and arms a timer for
each wait costs some 30 µs a query here, for queries that take 70 µs on the
server); to write, which only a query larger than the socket's buffer does,
through the loop's own writer.

Cancellation is the caller's: a cancelled wait leaves the socket unwatched and
the query running; PostgresExecutor cancels it on the server and closes the
session.

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

from pgquartz.runner import libpq
from pgquartz.runner.executors import readiness

QUICK_WAIT = 0.001
"""Seconds an answer is waited for in place (the loop held) before waiting through the loop."""

LOOP_TURN_EVERY = 0.001
"""Seconds of answers waited for in place after which the loop is given a turn."""

_loop_turned = time.monotonic()
"""When a wait of this module last let the loop run."""


async def execute(connection: libpq.Connection) -> list[libpq.Result]:
    """Every result of the query just sent on ``connection``, up to its end (or to a COPY, which
    waits for data from the client). Raises :class:`libpq.Error` if the connection is lost."""
    global _loop_turned
    loop = asyncio.get_running_loop()
    watched = readiness.for_loop(loop)
    fileno = connection.socket
    while connection.flush():
        if await _readable_or_writable(loop, watched, fileno):
            connection.consume_input()  # the server may answer before it has read all: take it in
    results: list[libpq.Result] = []
    try:
        while True:
            if not watched.idle():
                await _readable(loop, watched, fileno)
                _loop_turned = time.monotonic()
            else:  # nothing else waits: a quick answer is waited for in place
                poller = select.poll()
                poller.register(fileno, select.POLLIN)
                if not poller.poll(QUICK_WAIT * 1000):
                    await _readable(loop, watched, fileno)
                    _loop_turned = time.monotonic()
                elif time.monotonic() - _loop_turned >= LOOP_TURN_EVERY:
                    await asyncio.sleep(0)
                    _loop_turned = time.monotonic()
            if connection.take_results(results):
                return results
    except BaseException:
        for result in results:
            result.clear()
        raise


async def _readable(loop: asyncio.AbstractEventLoop, watched: readiness.Readiness, fileno: int) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def readable(fd: int) -> None:
        # Unwatched at once: left to the waiting task, the socket (still readable) would make
        # the loop's next turn, the one that resumes the task, dispatch it again.
        watched.unwatch(fd)
        if not future.done():
            future.set_result(None)

    watched.watch(fileno, readable)
    try:
        await future
    finally:
        watched.unwatch(fileno)


async def _readable_or_writable(
    loop: asyncio.AbstractEventLoop, watched: readiness.Readiness, fileno: int
) -> bool:
    """Wait until the socket takes more of the query or has input; True: it has input."""
    future: asyncio.Future[bool] = loop.create_future()

    def readable(fd: int) -> None:
        watched.unwatch(fd)
        if not future.done():
            future.set_result(True)

    def writable() -> None:
        if not future.done():
            future.set_result(False)

    watched.watch(fileno, readable)
    loop.add_writer(fileno, writable)
    try:
        return await future
    finally:
        watched.unwatch(fileno)
        loop.remove_writer(fileno)
