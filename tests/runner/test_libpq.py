"""The runner's own libpq binding, against a real server: results, errors, connecting, loading."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from pgquartz.runner import libpq
from pgquartz.runner.executors import libpqwait
from tests.support.pgcluster import PgCluster, bin_dir


@pytest.fixture
async def session(pg_cluster: PgCluster, database: str) -> AsyncIterator[libpq.Connection]:
    connection = await libpq.connect({**pg_cluster.primary.params, "dbname": database})
    yield connection
    connection.finish()


async def results_of(
    session: libpq.Connection, text: str, params: list[bytes] | None = None
) -> list[libpq.Result]:
    if params is None:
        session.send_query(text.encode())
    else:
        session.send_query_params(text.encode(), params)
    return await libpqwait.execute(session)


async def rows_of(
    session: libpq.Connection, text: str, params: list[bytes] | None = None
) -> list[list[str | None]]:
    results = await results_of(session, text, params)
    try:
        return [row for result in results for row in result.rows()]
    finally:
        for result in results:
            result.clear()


def test_the_connection_keywords_are_libpqs_own() -> None:
    keywords = libpq.keywords()
    assert {"host", "port", "dbname", "sslmode", "connect_timeout", "application_name"} <= set(keywords)
    assert "database" not in keywords


async def test_values_come_as_postgresql_text_and_null_is_not_an_empty_string(
    session: libpq.Connection,
) -> None:
    assert await rows_of(session, "select 1 as n, null as nothing, '' as empty, true, array[1, 2]") == [
        ["1", None, "", "t", "{1,2}"]
    ]
    results = await results_of(session, "select 1 as first, 2 as second")
    assert results[0].columns() == ["first", "second"]
    results[0].clear()


async def test_parameters_are_text_of_a_type_the_server_infers(session: libpq.Connection) -> None:
    assert await rows_of(session, "select $1::int + 1, $2", [b"41", b"it's; not sql"]) == [
        ["42", "it's; not sql"]
    ]


async def test_a_server_error_keeps_its_sqlstate_and_loses_its_severity(session: libpq.Connection) -> None:
    results = await results_of(session, "select 1/0")
    assert [result.status for result in results] == [libpq.FATAL_ERROR]
    error = results[0].error()
    results[0].clear()
    assert error.sqlstate == "22012"
    assert str(error) == "division by zero"
    assert session.usable  # an SQL error is not a lost connection
    assert await rows_of(session, "select 2") == [["2"]]


async def test_the_server_s_hint_and_position_stay_in_the_message(session: libpq.Connection) -> None:
    results = await results_of(session, "select * from no_such_table")
    error = results[0].error()
    results[0].clear()
    assert error.sqlstate == "42P01"
    assert str(error).startswith('relation "no_such_table" does not exist\nLINE 1:')


async def test_notices_are_not_written_to_the_runner_s_stderr(
    session: libpq.Connection, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await rows_of(session, "do $$ begin raise notice 'a notice nobody asked for'; end $$") == []
    assert "a notice nobody asked for" not in capfd.readouterr().err


async def test_a_refused_connection_says_where_in_libpq_s_words(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(libpq.Error) as raised:
        await libpq.connect({"host": str(tmp_path), "port": "5999", "dbname": "postgres"})
    assert raised.value.sqlstate is None
    assert str(tmp_path) in str(raised.value) and "failed" in str(raised.value)


async def test_a_server_that_never_answers_is_given_up_after_connect_timeout() -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        started = time.monotonic()
        with pytest.raises(libpq.Error, match="timeout"):
            await libpq.connect(
                {"host": "127.0.0.1", "port": str(silent.getsockname()[1]), "connect_timeout": "2"}
            )
        assert 1.5 < time.monotonic() - started < 10
    finally:
        silent.close()


async def test_while_connecting_the_loop_keeps_running() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        with pytest.raises(libpq.Error):
            await libpq.connect(
                {"host": "127.0.0.1", "port": str(silent.getsockname()[1]), "connect_timeout": "2"}
            )
    finally:
        ticker.cancel()
        silent.close()
    assert ticks > 50


@pytest.mark.parametrize(
    ("given", "seconds"), [("0", None), ("", None), ("1", 2.0), ("2", 2.0), ("30", 30.0)]
)
def test_connect_timeout_reads_as_libpq_reads_it(
    given: str, seconds: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert libpq.connect_timeout({"connect_timeout": given} if given else {}) == seconds


def test_a_connect_timeout_that_is_no_number_is_refused() -> None:
    with pytest.raises(libpq.Error, match="connect_timeout"):
        libpq.connect_timeout({"connect_timeout": "soon"})


async def test_host_names_are_resolved_before_libpq_sees_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    resolved = await libpq.resolved({"host": "localhost,/run/pg,10.0.0.7", "port": "5433", "dbname": "x"})
    hosts, addresses, ports = (resolved[key].split(",") for key in ("host", "hostaddr", "port"))
    assert len(hosts) == len(addresses) == len(ports) >= 3
    assert {address for host, address in zip(hosts, addresses, strict=True) if host == "localhost"} <= {
        "127.0.0.1",
        "::1",
    }
    assert ("/run/pg", "") in zip(hosts, addresses, strict=True)
    assert ("10.0.0.7", "") in zip(hosts, addresses, strict=True)
    assert set(ports) == {"5433"} and resolved["dbname"] == "x"


async def test_sockets_and_addresses_need_no_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    for params in ({"host": "/tmp/x"}, {"host": "127.0.0.1,::1"}, {"host": "db", "hostaddr": "10.1.1.1"}):
        assert await libpq.resolved(params) == params


async def test_a_name_that_cannot_be_resolved_says_so() -> None:
    with pytest.raises(libpq.Error, match=r'could not translate host name "no-such-host\.invalid"'):
        await libpq.connect({"host": "no-such-host.invalid", "connect_timeout": "2"})


async def test_a_session_cancels_its_running_query(session: libpq.Connection) -> None:
    session.send_query(b"select pg_sleep(30)")
    waiting = asyncio.ensure_future(libpqwait.execute(session))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await session.cancel(give_up_after=5.0)
    results = await asyncio.wait_for(waiting, 10)
    assert time.monotonic() - started < 5
    assert [result.error_field(libpq.DIAG_SQLSTATE) for result in results] == [b"57014"]
    for result in results:
        result.clear()


def test_the_library_can_be_named_and_a_missing_one_is_a_clear_error() -> None:
    named = bin_dir().parent / "lib" / "libpq.so.5"
    probe = "from pgquartz.runner import libpq; print(libpq.library().path, libpq.version() >= 100000)"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PGQUARTZ_LIBPQ": str(named)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == [str(named), "True"]
    missing = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PGQUARTZ_LIBPQ": "/nowhere/libpq.so.5"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0
    assert "cannot load libpq" in missing.stderr and "/nowhere/libpq.so.5" in missing.stderr


def test_without_a_name_the_library_psycopg_binary_ships_is_loaded() -> None:
    probe = "from pgquartz.runner import libpq; print(libpq.library().path)"
    env = {key: value for key, value in os.environ.items() if key != "PGQUARTZ_LIBPQ"}
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert "psycopg_binary.libs" in found.stdout


async def test_a_nul_byte_is_refused_not_cut_off(session: libpq.Connection) -> None:
    # libpq takes C strings: "select 1\0; drop ..." would have run as "select 1", silently.
    with pytest.raises(libpq.Error, match="NUL"):
        session.send_query(b"select 1\0; select 2")
    with pytest.raises(libpq.Error, match="NUL"):
        session.send_query_params(b"select $1", [b"a\0b"])
    assert await rows_of(session, "select 3") == [["3"]]  # nothing was sent
