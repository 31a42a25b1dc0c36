"""The PostgreSQL executor against a real primary and standby: rows, arguments, batches, roles, errors."""

from __future__ import annotations

import asyncio
import pathlib
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from pgquartz.runner.executors.postgres import PostgresExecutor
from pgquartz.runner.model import Command, Connection
from pgquartz.runner.model.results import CommandState
from tests.support.pgcluster import PgCluster


def executor_for(params: dict[str, str], *, role: str = "all", sessions: int = 1) -> PostgresExecutor:
    connection = Connection.from_data({"role": role, "conn_params": params})
    return PostgresExecutor(
        name="pg", connection=connection, application_name="pgquartz/test", max_sessions=sessions
    )


@pytest.fixture
async def primary(pg_cluster: PgCluster, database: str) -> AsyncIterator[PostgresExecutor]:
    executor = executor_for({**pg_cluster.primary.params, "dbname": database})
    yield executor
    await executor.aclose()


def command(body: str, **keys: object) -> Command:
    return Command.from_data({"type": "pg", "inline": body, **keys})


async def run(executor: PostgresExecutor, body: str, args: dict[str, str] | None = None, **keys: object):  # type: ignore[no-untyped-def]
    return await executor.run(command(body, **keys), body=body, args=args or {})


async def test_rows_render_as_column_value_pairs(primary: PostgresExecutor) -> None:
    result = await run(primary, "select datname, 42 as answer from pg_database where datname = 'postgres'")
    assert result.state is CommandState.SUCCEEDED and result.rc == 0
    assert result.stdout.text == "{datname}={postgres} {answer}={42}\n"


async def test_values_use_postgres_text_nulls_are_distinct_and_quotes_doubled(
    primary: PostgresExecutor,
) -> None:
    result = await run(
        primary,
        "select true as b, null::text as n, 'NULL' as s, array[1,2] as a, 'O''Brien' as q,"
        " '2026-11-23'::date as d",
    )
    assert result.stdout.text == "{b}={t} {n}=NULL {s}={NULL} {a}={{1,2}} {q}={O''Brien} {d}={2026-11-23}\n"


async def test_statements_without_rows_print_nothing(primary: PostgresExecutor) -> None:
    result = await run(primary, "create table quiet (id int)")
    assert result.rc == 0 and result.stdout.text == ""


async def test_the_manuals_matrix_insert_stores_values_verbatim(primary: PostgresExecutor) -> None:
    await run(primary, "create table t1 (id int, txt text)")
    hostile = "x'); drop table t1; --"
    for arg1, arg2 in (("1", "A"), ("2", hostile)):
        result = await run(
            primary, "insert into t1 (id, txt) values(:arg1::integer, :arg2)", {"arg1": arg1, "arg2": arg2}
        )
        assert result.rc == 0, result.stderr.text
    rows = await run(primary, "select id, txt from t1 order by id")
    assert rows.stdout.text == "{id}={1} {txt}={A}\n{id}={2} {txt}={x''); drop table t1; --}\n"


async def test_several_statements_run_as_written_without_batch_mode(primary: PostgresExecutor) -> None:
    result = await run(
        primary,
        "CREATE TABLE IF NOT EXISTS t1 (id int, txt text);\nCREATE TABLE IF NOT EXISTS t2 (id int, id2 int);",
    )
    assert result.rc == 0, result.stderr.text
    tables = await run(primary, "select count(*) as n from pg_tables where tablename in ('t1', 't2')")
    assert tables.stdout.text == "{n}={2}\n"


async def test_batch_mode_runs_statements_one_at_a_time_with_arguments(primary: PostgresExecutor) -> None:
    body = """
        create table b (id int, txt text);
        insert into b values (:n::int, 'semi;colon');
        create function bump() returns int language plpgsql as $$ begin return 1; end; $$;
        select id, txt, bump() as f from b;
    """
    result = await run(primary, body, {"n": "7"}, batchMode=True)
    assert result.rc == 0, result.stderr.text
    assert result.stdout.text == "{id}={7} {txt}={semi;colon} {f}={1}\n"


async def test_a_failing_batch_stops_at_the_failing_statement(primary: PostgresExecutor) -> None:
    result = await run(
        primary, "create table c (id int); select nope from c; create table d (id int)", batchMode=True
    )
    assert result.state is CommandState.FAILED and result.rc == 1
    assert "ERROR 42703" in result.stderr.text and 'column "nope" does not exist' in result.stderr.text
    check = await run(primary, "select to_regclass('c') is not null as c, to_regclass('d') is null as d")
    assert check.stdout.text == "{c}={t} {d}={t}\n"


async def test_arguments_in_a_multi_statement_body_need_batch_mode(primary: PostgresExecutor) -> None:
    result = await run(primary, "select :a; select :a", {"a": "1"})
    assert result.rc == 1 and "batchMode" in result.stderr.text


async def test_sql_errors_are_rc_1_with_sqlstate(primary: PostgresExecutor) -> None:
    result = await run(primary, "select * from no_such_table")
    assert result.state is CommandState.FAILED and result.rc == 1
    assert result.error is not None and result.error.startswith("ERROR 42P01")


async def test_the_session_survives_an_error_and_is_reused(primary: PostgresExecutor) -> None:
    first = await run(primary, "select pg_backend_pid() as pid")
    await run(primary, "select 1/0")
    second = await run(primary, "select pg_backend_pid() as pid")
    assert first.stdout.text == second.stdout.text


async def test_application_name_identifies_the_job(primary: PostgresExecutor) -> None:
    result = await run(primary, "select current_setting('application_name') as app")
    assert result.stdout.text == "{app}={pgquartz/test}\n"


async def test_a_standby_only_command_is_skipped_on_the_primary(pg_cluster: PgCluster) -> None:
    executor = executor_for(pg_cluster.primary.params)
    try:
        skipped = await run(executor, "select 1", role="standby")
        ran = await run(executor, "select 1 as one", role="primary")
    finally:
        await executor.aclose()
    assert skipped.state is CommandState.SKIPPED and skipped.rc == 0
    assert skipped.error == "expects a standby, 'pg' reaches a primary"
    assert ran.stdout.text == "{one}={1}\n"


async def test_roles_are_detected(pg_cluster: PgCluster) -> None:
    for server, role in ((pg_cluster.primary, "primary"), (pg_cluster.standby, "standby")):
        executor = executor_for(server.params)
        try:
            assert await executor.role() == role
        finally:
            await executor.aclose()


async def test_parallel_commands_get_their_own_sessions_up_to_the_limit(pg_cluster: PgCluster) -> None:
    executor = executor_for(pg_cluster.primary.params, sessions=3)
    try:
        results = await asyncio.gather(
            *(run(executor, "select pg_backend_pid() as p, pg_sleep(0.3)") for _ in range(6))
        )
    finally:
        await executor.aclose()
    pids = {result.stdout.text.split()[0] for result in results}
    assert len(pids) == 3


async def test_cancelling_a_query_cancels_it_on_the_server(pg_cluster: PgCluster) -> None:
    executor = executor_for(pg_cluster.primary.params)
    marker = f"cancel-{uuid.uuid4().hex}"
    task = asyncio.ensure_future(run(executor, f'select pg_sleep(60) as "{marker}"'))
    await asyncio.sleep(0.5)
    assert pg_cluster.primary.backends_running(marker) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if pg_cluster.primary.backends_running(marker) == 0:
            break
        await asyncio.sleep(0.1)
    assert pg_cluster.primary.backends_running(marker) == 0
    await executor.aclose()


async def test_unreachable_server_is_a_clear_command_error(tmp_path: object) -> None:
    executor = executor_for({"host": "/nonexistent/socket/dir", "port": "5999", "user": "postgres"})
    result = await run(executor, "select 1")
    assert result.state is CommandState.FAILED and result.rc == 1
    assert result.error is not None and result.error.startswith("cannot connect to 'pg'")
    assert "Traceback" not in result.stderr.text


async def test_copy_to_the_client_is_refused_and_the_next_command_gets_a_working_session(
    primary: PostgresExecutor,
) -> None:
    copied = await run(primary, "copy (select 1) to stdout")
    assert copied.state is CommandState.FAILED and "COPY to or from the client is not supported" in (
        copied.error or ""
    )
    after = await run(primary, "select 42 as n")
    assert after.state is CommandState.SUCCEEDED and after.stdout.text == "{n}={42}\n"


async def test_arguments_are_text_of_a_type_the_server_infers(primary: PostgresExecutor) -> None:
    await run(primary, "create table typed (id int, day date, note text)")
    inserted = await run(
        primary,
        "insert into typed values (:id, :day, :note)",
        {"id": "7", "day": "2026-12-07", "note": "50%"},
    )
    assert inserted.rc == 0, inserted.stderr.text
    rows = await run(primary, "select id + 1 as next, day, note from typed where note like '%\\%'")
    assert rows.stdout.text == "{next}={8} {day}={2026-12-07} {note}={50%}\n"


async def test_a_server_error_is_shown_with_its_sqlstate_hint_and_position_once(
    primary: PostgresExecutor,
) -> None:
    divided = await run(primary, "select 1/0")
    assert divided.error == "ERROR 22012: division by zero"
    missing = await run(primary, "select * from no_such_table")
    assert missing.stderr.text.startswith('ERROR 42P01: relation "no_such_table" does not exist\nLINE 1:')


async def test_notices_are_not_written_to_the_runners_stderr(
    primary: PostgresExecutor, capfd: pytest.CaptureFixture[str]
) -> None:
    result = await run(primary, "do $$ begin raise notice 'a notice nobody asked for'; end $$")
    assert result.rc == 0 and result.stdout.text == result.stderr.text == ""
    assert "a notice nobody asked for" not in capfd.readouterr().err


async def test_a_nul_character_is_refused_not_cut_off(primary: PostgresExecutor) -> None:
    # libpq takes C strings: "select 1\0; create …" would have run as "select 1", silently
    body = "select 1 as one;\0 create table after_nul (id int)"
    refused = await run(primary, body)
    assert refused.state is CommandState.FAILED and "NUL" in (refused.error or "")
    in_argument = await run(primary, "select :a as a", {"a": "x\0y"})
    assert in_argument.state is CommandState.FAILED and "NUL" in (in_argument.error or "")
    check = await run(primary, "select to_regclass('after_nul') is null as absent")
    assert check.stdout.text == "{absent}={t}\n"


async def test_a_query_larger_than_the_sockets_buffer_runs(primary: PostgresExecutor) -> None:
    size = 32 * 1024 * 1024
    result = await run(primary, f"select length('{'x' * size}') as n")
    assert result.stdout.text == f"{{n}}={{{size}}}\n"


async def test_a_session_the_server_ends_fails_its_command_and_the_next_gets_a_new_one(
    pg_cluster: PgCluster, database: str
) -> None:
    executor = executor_for({**pg_cluster.primary.params, "dbname": database})
    marker = f"ended-{uuid.uuid4().hex}"
    try:
        task = asyncio.ensure_future(run(executor, f'select pg_sleep(30) as "{marker}"'))
        await asyncio.sleep(0.5)
        terminate = (
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where query like :pattern and pid <> pg_backend_pid()"
        )
        other = executor_for({**pg_cluster.primary.params, "dbname": database})
        await run(other, terminate, {"pattern": f"%{marker}%"})
        await other.aclose()
        ended = await asyncio.wait_for(task, 10)
        assert ended.state is CommandState.FAILED and "57P01" in ended.stderr.text + (ended.error or "")
        after = await run(executor, "select 2 as n")
        assert after.stdout.text == "{n}={2}\n"
    finally:
        await executor.aclose()


async def test_a_refused_connection_says_where(tmp_path: pathlib.Path) -> None:
    executor = executor_for({"host": str(tmp_path), "port": "5999", "user": "postgres"})
    result = await run(executor, "select 1")
    assert result.state is CommandState.FAILED
    assert str(tmp_path) in (result.error or "") and "failed" in (result.error or "")


async def test_a_name_that_cannot_be_resolved_says_so() -> None:
    executor = executor_for({"host": "no-such-host.invalid", "connect_timeout": "2"})
    result = await run(executor, "select 1")
    assert result.state is CommandState.FAILED and "no-such-host.invalid" in (result.error or "")


async def test_a_server_that_never_answers_is_given_up_after_connect_timeout_and_the_loop_runs_on() -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    port = str(silent.getsockname()[1])
    executor = executor_for({"host": "127.0.0.1", "port": port, "connect_timeout": "2", "user": "x"})
    try:
        started = time.monotonic()
        result = await run(executor, "select 1")
        waited = time.monotonic() - started
    finally:
        ticker.cancel()
        silent.close()
    assert result.state is CommandState.FAILED and "timeout" in (result.error or "")
    assert 1.5 < waited < 10
    assert ticks > 50  # the loop was never held while connecting


async def test_each_host_of_a_list_gets_its_own_connect_timeout(pg_cluster: PgCluster) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    params = pg_cluster.primary.params
    hosts = {"host": f"127.0.0.1,{params['host']}", "port": f"{silent.getsockname()[1]},{params['port']}"}
    executor = executor_for({**params, **hosts, "connect_timeout": "2"})
    try:
        started = time.monotonic()
        result = await run(executor, "select 1 as one")
        assert time.monotonic() - started > 1.5  # the first host was given its timeout, then the next
        assert result.stdout.text == "{one}={1}\n"
    finally:
        silent.close()
        await executor.aclose()
