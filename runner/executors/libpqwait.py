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
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import psycopg
from psycopg import waiting
from psycopg.abc import PQGen

from pgquartz.runner.executors import readiness

Result = TypeVar("Result")


async def run(generator: PQGen[Result], fileno: int) -> Result:
    """Drive one of psycopg's libpq generators (``generators.execute``, ...) on socket ``fileno``."""
    try:
        state = next(generator)
    except StopIteration as stop:
        result: Result = stop.value
        return result
    loop = asyncio.get_running_loop()
    watched = readiness.for_loop(loop)
    try:
        while True:
            future: asyncio.Future[int] = loop.create_future()

            def readable(fd: int, future: asyncio.Future[int] = future) -> None:
                if not future.done():
                    future.set_result(waiting.READY_R)

            def writable(future: asyncio.Future[int] = future) -> None:
                if not future.done():
                    future.set_result(waiting.READY_W)

            reading, writing = state & waiting.WAIT_R, state & waiting.WAIT_W
            if reading:
                watched.watch(fileno, readable)
            if writing:
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
