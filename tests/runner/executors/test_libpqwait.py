"""Queries' results waited for on the runner's epoll, against a real server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from pgquartz.runner import libpq
from pgquartz.runner.executors import libpqwait, readiness
from tests.support.pgcluster import PgCluster


@pytest.fixture
async def session(pg_cluster: PgCluster, database: str) -> AsyncIterator[libpq.Connection]:
    connection = await libpq.connect({**pg_cluster.primary.params, "dbname": database})
    yield connection
    connection.finish()


async def ended(session: libpq.Connection) -> list[libpq.Result]:
    return await libpqwait.execute(session)


async def query(session: libpq.Connection, text: str) -> list[list[str | None]]:
    session.send_query(text.encode())
    results = await libpqwait.execute(session)
    try:
        return [[row[0] for row in result.rows()] for result in results]
    finally:
        for result in results:
            result.clear()


def sqlstates(results: list[libpq.Result]) -> list[bytes | None]:
    return [result.error_field(libpq.DIAG_SQLSTATE) for result in results]


async def test_every_result_of_a_query_comes_back(session: libpq.Connection) -> None:
    assert await query(session, "select 1; select n from generate_series(1, 3) n") == [
        ["1"],
        ["1", "2", "3"],
    ]


async def test_a_query_larger_than_the_socket_buffer_waits_to_write(
    session: libpq.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    writers: list[int] = []
    add_writer = loop.add_writer

    def counted(fd: int, callback: Any, *args: Any) -> None:
        writers.append(fd)
        add_writer(fd, callback, *args)

    monkeypatch.setattr(loop, "add_writer", counted)
    size = 32 * 1024 * 1024
    assert await query(session, f"select length('{'x' * size}')") == [[str(size)]]
    assert writers and set(writers) == {session.socket}


async def test_a_cancelled_wait_leaves_the_session_usable_once_the_query_is_cancelled(
    session: libpq.Connection,
) -> None:
    waiting = asyncio.ensure_future(query(session, "select pg_sleep(30)"))
    await asyncio.sleep(0.3)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await session.cancel(give_up_after=5.0)  # what PostgresExecutor does next
    assert sqlstates(await ended(session))[-1] == b"57014"  # the cancelled query's end
    assert await query(session, "select 2") == [["2"]]  # its socket is watched anew


async def test_a_session_the_server_ends_is_an_error_not_a_hang(
    session: libpq.Connection, pg_cluster: PgCluster, database: str
) -> None:
    pid = session.backend_pid
    session.send_query(b"select pg_sleep(30)")
    waiting = asyncio.ensure_future(ended(session))
    await asyncio.sleep(0.3)
    async with await psycopg.AsyncConnection.connect(
        **{**pg_cluster.primary.params, "dbname": database}, autocommit=True
    ) as other:
        await other.execute("select pg_terminate_backend(%s)", [pid])
    results = await asyncio.wait_for(waiting, 10)
    assert b"57P01" in sqlstates(results)  # the server said why, then closed: that is kept
    assert not session.usable


@pytest.fixture
def watched_sockets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Descriptors registered on the runner's epoll while the test runs."""
    registered: list[int] = []
    watch = readiness.Readiness.watch

    def counted(self: readiness.Readiness, fd: int, callback: readiness.Callback) -> None:
        registered.append(fd)
        watch(self, fd, callback)

    monkeypatch.setattr(readiness.Readiness, "watch", counted)
    return registered


async def test_a_quick_answer_is_waited_for_in_place_when_nothing_else_waits(
    session: libpq.Connection, watched_sockets: list[int]
) -> None:
    for _ in range(50):  # one answer may take longer than the wait in place on a busy machine
        assert await query(session, "select 1") == [["1"]]
    assert len(watched_sockets) < 25


async def test_while_a_command_is_watched_answers_are_waited_for_through_the_loop(
    session: libpq.Connection, watched_sockets: list[int]
) -> None:
    watched = readiness.for_loop(asyncio.get_running_loop())
    read_end, write_end = os.pipe()
    watched.watch(read_end, lambda fd: None)  # another command's pipe, silent
    try:
        assert await query(session, "select 1") == [["1"]]
    finally:
        watched.unwatch(read_end)
        os.close(read_end)
        os.close(write_end)
    assert watched_sockets == [read_end, session.socket]


async def ticking(ticks: list[int]) -> None:
    while True:
        await asyncio.sleep(0)
        ticks.append(1)


async def test_a_slow_answer_lets_the_loop_run_while_it_is_waited_for(
    session: libpq.Connection,
) -> None:
    ticks: list[int] = []
    ticker = asyncio.ensure_future(ticking(ticks))
    await asyncio.sleep(0)
    before = len(ticks)
    assert await query(session, "select pg_sleep(0.2)") == [[""]]
    during = len(ticks) - before
    ticker.cancel()
    assert during > 10


async def test_a_run_of_quick_answers_gives_the_loop_turns(session: libpq.Connection) -> None:
    ticks: list[int] = []
    ticker = asyncio.ensure_future(ticking(ticks))
    await asyncio.sleep(0)
    before = len(ticks)
    for n in range(300):  # some 15 ms or more of answers, each waited for in place
        assert await query(session, f"select {n}") == [[str(n)]]
    during = len(ticks) - before
    ticker.cancel()
    assert during >= 2


async def test_a_run_of_quick_answers_can_be_cancelled(session: libpq.Connection) -> None:
    answered = 0

    async def forever() -> None:
        nonlocal answered
        while True:
            await query(session, "select 1")
            answered += 1

    running = asyncio.ensure_future(forever())
    asyncio.get_running_loop().call_later(0.1, running.cancel)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 30)
    assert answered > 0
    await session.cancel(give_up_after=5.0)
    for result in await ended(session):  # what is left of the cancelled one
        result.clear()
    assert await query(session, "select 2") == [["2"]]
