"""SQL retries against the real server: each transient error retried and then succeeding, nothing else.

Every error is produced the way production meets it: a concurrent update under
repeatable read (40001), a real deadlock (40P01), ``lock_timeout`` behind a held
lock (55P03), ``pg_terminate_backend`` (57P01).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from pgquartz.runner.executors.postgres import PostgresExecutor
from pgquartz.runner.model import Command, Connection
from pgquartz.runner.model.results import CommandResult, CommandState, RetryAttempt
from tests.support.pgcluster import PgCluster

FAST = {"attempts": 3, "backoff": "50ms"}


@pytest.fixture
def params(pg_cluster: PgCluster, database: str) -> dict[str, str]:
    return {**pg_cluster.primary.params, "dbname": database}


@pytest.fixture
async def other(params: dict[str, str]) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Another session on the same database: the concurrent transaction."""
    async with await psycopg.AsyncConnection.connect(**params) as conn:
        await conn.execute("create table t (k int primary key, v int not null)")
        await conn.execute("insert into t values (1, 0), (2, 0)")
        await conn.execute("create table log (n int)")
        await conn.execute("create sequence once")
        await conn.execute(
            "create function fail_once() returns void language plpgsql as $$ begin"
            " if nextval('once') = 1 then"
            " raise exception 'simulated conflict' using errcode = 'serialization_failure'; end if; end $$"
        )
        await conn.commit()
        yield conn


async def run(
    params: dict[str, str], body: str, retry: dict[str, Any] | None, **keys: Any
) -> tuple[CommandResult, list[RetryAttempt]]:
    connection = Connection.from_data({"conn_params": params})
    executor = PostgresExecutor(name="pg", connection=connection, application_name="pgquartz/test")
    command = Command.from_data({"type": "pg", "inline": body, "retry": retry, **keys})
    attempts: list[RetryAttempt] = []
    try:
        result = await executor.run(command, body=body, args={}, on_retry=attempts.append)
    finally:
        await executor.aclose()
    return result, attempts


async def backend_of(conn: psycopg.AsyncConnection[Any], marker: str, *, waiting: bool = False) -> int:
    """The pid of the session running a statement with ``marker`` (waiting on a lock, if asked).

    Asked on a session of its own: ``conn`` may be in the middle of the concurrent transaction.
    """
    condition = " and wait_event_type = 'Lock'" if waiting else ""
    query = "select pid from pg_stat_activity where query like %s and pid <> pg_backend_pid()" + condition
    params = {key: value for key, value in conn.info.get_parameters().items() if key != "options"}
    async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as monitor:
        for _ in range(400):
            cursor = await monitor.execute(query, (f"%{marker}%",))
            row = await cursor.fetchone()
            if row:
                return int(row[0])
            await asyncio.sleep(0.025)
    raise AssertionError(f"no session ran {marker}")


async def values(conn: psycopg.AsyncConnection[Any], sql: str) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql)
    rows = await cursor.fetchall()
    await conn.commit()
    return rows


async def test_a_serialization_failure_is_retried_and_the_update_lands_once(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    body = (
        "begin isolation level repeatable read; select count(*) from t;"
        f" select pg_sleep(0.4) as {marker}; update t set v = v + 1 where k = 1; commit;"
    )
    task = asyncio.create_task(run(params, body, {"on": ["serialization_failure"], **FAST}))
    await backend_of(other, f"as {marker}")
    await other.execute("update t set v = v + 10 where k = 1")  # commits while the command sleeps
    await other.commit()
    result, attempts = await task
    assert result.state is CommandState.SUCCEEDED, result.stderr.text
    assert result.attempts == 2 and [a.attempt for a in attempts] == [1]
    assert "40001" in attempts[0].error
    assert await values(other, "select v from t where k = 1") == [(11,)]


async def test_a_deadlock_victim_is_retried_after_the_other_side_commits(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    await other.execute("update t set v = v + 1 where k = 2")  # holds row 2
    body = (
        "begin; update t set v = v + 1 where k = 1;"
        f" update t set v = v + 1 where k = 2 /* {marker} */; commit;"
    )
    fast_detection = {**params, "options": "-c deadlock_timeout=100ms"}
    task = asyncio.create_task(run(fast_detection, body, {"on": ["deadlock_detected"], **FAST}))
    await backend_of(other, marker, waiting=True)  # the command holds row 1 and waits for row 2
    await other.execute("update t set v = v + 1 where k = 1")  # the cycle: the command is the victim
    await other.commit()
    result, attempts = await task
    assert result.state is CommandState.SUCCEEDED, result.stderr.text
    assert result.attempts == 2 and "40P01" in attempts[0].error
    assert await values(other, "select k, v from t order by k") == [(1, 2), (2, 2)]


async def test_lock_not_available_is_retried_until_the_lock_is_released(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    await other.execute("lock table t in access exclusive mode")
    short_wait = {**params, "options": "-c lock_timeout=100ms"}
    released = asyncio.Event()

    async def release_after_first_failure() -> None:
        await released.wait()
        await other.rollback()

    helper = asyncio.create_task(release_after_first_failure())
    connection = Connection.from_data({"conn_params": short_wait})
    executor = PostgresExecutor(name="pg", connection=connection, application_name="pgquartz/test")
    command = Command.from_data(
        {
            "type": "pg",
            "inline": "update t set v = 5",
            "retry": {"on": ["55P03"], "attempts": 5, "backoff": "100ms"},
        }
    )
    seen: list[RetryAttempt] = []

    def on_retry(attempt: RetryAttempt) -> None:
        seen.append(attempt)
        released.set()

    try:
        result = await executor.run(command, body="update t set v = 5", args={}, on_retry=on_retry)
    finally:
        await executor.aclose()
        await helper
    assert result.state is CommandState.SUCCEEDED, result.stderr.text
    assert result.attempts >= 2 and "55P03" in seen[0].error
    assert await values(other, "select distinct v from t") == [(5,)]


async def test_a_terminated_session_is_replaced_and_the_command_run_again(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    body = f"select pg_sleep(0.5) as {marker}"
    task = asyncio.create_task(run(params, body, {"on": ["admin_shutdown"], **FAST}))
    pid = await backend_of(other, f"as {marker}")
    await other.execute("select pg_terminate_backend(%s)", (pid,))
    await other.commit()
    result, attempts = await task
    assert result.state is CommandState.SUCCEEDED, result.stderr.text
    assert result.attempts == 2 and "57P01" in attempts[0].error
    assert result.stdout.text == f"{{{marker}}}={{}}\n"


async def test_an_error_that_is_not_listed_is_not_retried(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    result, attempts = await run(
        params, "insert into t values (1, 1)", {"on": ["serialization_failure", "40P01", "08"], **FAST}
    )
    assert result.state is CommandState.FAILED and result.attempts == 1 and attempts == []
    assert "23505" in (result.error or "")


async def test_exhausted_attempts_fail_with_the_last_error(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    await other.execute("lock table t in access exclusive mode")
    short_wait = {**params, "options": "-c lock_timeout=50ms"}
    result, attempts = await run(
        short_wait, "update t set v = 1", {"on": ["lock_not_available"], "attempts": 3, "backoff": "10ms"}
    )
    await other.rollback()
    assert result.state is CommandState.FAILED and result.attempts == 3 and len(attempts) == 2
    assert "55P03" in (result.error or "") and result.stderr.text.count("55P03") == 3


async def test_a_class_matches_every_condition_in_it(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    result, attempts = await run(params, "select fail_once()", {"on": ["transaction_rollback"], **FAST})
    assert result.state is CommandState.SUCCEEDED and result.attempts == 2 and len(attempts) == 1


async def test_without_batch_mode_the_whole_body_runs_again_as_one_transaction(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    result, _ = await run(
        params, "insert into log values (1); select fail_once();", {"on": ["40001"], **FAST}
    )
    assert result.state is CommandState.SUCCEEDED and result.attempts == 2
    assert await values(other, "select n from log") == [(1,)]


async def test_batch_mode_resumes_at_the_failed_statement_not_rerunning_what_committed(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    body = (
        "insert into log values (1); insert into log values (2); select fail_once();"
        " insert into log values (3);"
    )
    result, _ = await run(params, body, {"on": ["40001"], **FAST}, batchMode=True)
    assert result.state is CommandState.SUCCEEDED and result.attempts == 2
    assert await values(other, "select n from log order by n") == [(1,), (2,), (3,)]


async def test_batch_mode_resumes_at_the_begin_of_the_block_the_failure_rolled_back(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    body = (
        "insert into log values (1); begin; insert into log values (2); select fail_once(); commit;"
        " insert into log values (3);"
    )
    result, _ = await run(params, body, {"on": ["40001"], **FAST}, batchMode=True)
    assert result.state is CommandState.SUCCEEDED and result.attempts == 2, result.stderr.text
    assert await values(other, "select n from log order by n") == [(1,), (2,), (3,)]


async def test_a_connections_retry_applies_to_its_commands_without_one(
    params: dict[str, str], other: psycopg.AsyncConnection[Any]
) -> None:
    connection = Connection.from_data({"conn_params": params, "retry": {"on": ["40001"], **FAST}})
    executor = PostgresExecutor(name="pg", connection=connection, application_name="pgquartz/test")
    command = Command.from_data({"type": "pg", "inline": "select fail_once()"})
    try:
        result = await executor.run(command, body="select fail_once()", args={})
    finally:
        await executor.aclose()
    assert result.state is CommandState.SUCCEEDED and result.attempts == 2
