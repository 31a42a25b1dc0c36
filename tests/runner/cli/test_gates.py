"""Gates on the real primary and standby: replication lag, long transactions, backups, custom checks.

Replay is paused on the shared standby (``pg_wal_replay_pause()``) while the
primary writes, to make real lag; every test that pauses it resumes it.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import PGQUARTZ, dedent, run_pgquartz
from tests.support.pgcluster import PgCluster, bin_dir

Write = Callable[..., pathlib.Path]


@contextlib.contextmanager
def replay_paused(cluster: PgCluster, database: str) -> Iterator[None]:
    cluster.wait_replicated()
    cluster.standby.query("select pg_wal_replay_pause()")
    try:
        with cluster.primary.connect(dbname=database) as conn:
            conn.execute(
                "create table ballast as select repeat('x', 1000) as pad from generate_series(1, 2000)"
            )
        yield
    finally:
        cluster.standby.query("select pg_wal_replay_resume()")
        cluster.wait_replicated()


def job(cluster: PgCluster, database: str, gates: str, *, connection: str = "standby") -> str:
    server = cluster.standby if connection == "standby" else cluster.primary
    return (
        dedent(
            f"""
        connections:
          {connection}:
            role: {connection}
            conn_params: {{host: "{server.socket_dir}", port: {server.port}, user: postgres,
                           dbname: {database}}}
        gates:
        """
        )
        + "".join(f"  {line}\n" for line in dedent(gates).splitlines())
        + dedent(
            """
        steps:
          work:
            commands:
              - inline: touch worked
        """
        )
    )


def summary_of(tmp_path: pathlib.Path) -> dict[str, Any]:
    return json.loads((tmp_path / "summary.json").read_text())  # type: ignore[no-any-return]


def kinds(stdout: str) -> list[str]:
    return [json.loads(line)["event"] for line in stdout.splitlines()]


def run_job(tmp_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return run_pgquartz(
        "run", "job.yml", "--summary-file", "summary.json", "--log-format", "json", cwd=tmp_path, timeout=90
    )


def test_a_lagging_standby_keeps_the_gate_closed_until_the_wait_ends_then_the_run_is_gated(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        job(
            pg_cluster,
            database,
            """
            wait: 1500ms
            interval: 200ms
            require:
              - maxReplicationLag: 64kB
            """,
        )
    )
    with replay_paused(pg_cluster, database):
        started = time.monotonic()
        result = run_job(tmp_path)
        took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "worked").exists()
    summary = summary_of(tmp_path)
    assert summary["result"] == "gated"
    assert "replication lag" in summary["gated"][0] and "over 64kB" in summary["gated"][0]
    assert kinds(result.stdout).count("gates_closed") == 1  # reported once, not every 200 ms
    assert took >= 1.5


def test_the_primary_sees_the_standbys_lag_too_and_gate_failed_is_exit_7(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        job(
            pg_cluster,
            database,
            """
            onTimeout: fail
            require:
              - {maxReplicationLag: 64kB, connection: primary}
            """,
            connection="primary",
        )
    )
    with replay_paused(pg_cluster, database):
        deadline = time.monotonic() + 10  # the standby reports its replay position every 10 s at most
        while True:
            result = run_job(tmp_path)
            if result.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert result.returncode == 7, result.stdout + result.stderr
    summary = summary_of(tmp_path)
    assert summary["result"] == "gate-failed" and "behind" in summary["gated"][0]
    assert not (tmp_path / "worked").exists()


def test_a_standby_that_catches_up_in_time_opens_the_gate_and_the_run_proceeds(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        job(
            pg_cluster,
            database,
            """
            wait: 30s
            interval: 200ms
            require:
              - maxReplicationLag: 64kB
            """,
        )
    )
    with replay_paused(pg_cluster, database):
        process = subprocess.Popen(
            [*PGQUARTZ, "run", "job.yml", "--summary-file", "summary.json", "--log-format", "json"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    assert (tmp_path / "worked").exists()
    assert summary_of(tmp_path)["result"] == "succeeded"
    events = kinds(stdout)
    assert events.index("gates_closed") < events.index("gates_opened") < events.index("step_started")


def test_a_long_transaction_holds_the_gate_until_it_ends(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        job(
            pg_cluster,
            database,
            """
            wait: 30s
            interval: 200ms
            require:
              - maxTransactionAge: 300ms
            """,
            connection="primary",
        )
    )
    with pg_cluster.primary.connect(dbname=database, application_name="long-report") as other:
        other.autocommit = False
        other.execute("select txid_current()")  # a transaction, open from now on
        time.sleep(0.5)
        ended = threading.Timer(1.5, other.commit)
        ended.start()
        started = time.monotonic()
        result = run_job(tmp_path)
        ended.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "worked").exists()
    assert time.monotonic() - started >= 1.0
    [closed] = [json.loads(line) for line in result.stdout.splitlines() if '"gates_closed"' in line]
    assert "long-report" in closed["reasons"][0] and "open for" in closed["reasons"][0]


def test_the_runners_own_transactions_do_not_close_its_gates(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    p = pg_cluster.primary
    write_job(
        f"""
        parallel: 2
        connections:
          pg: {p.connection_yaml(database)}
        steps:
          long:
            commands:
              - {{type: pg, inline: "begin; select pg_sleep(3); commit;"}}
          gated:
            gates:
              require:
                - maxTransactionAge: 500ms
            commands:
              - {{type: pg, inline: "select pg_sleep(1)"}}
              - inline: touch worked
        """
    )
    result = run_job(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "worked").exists()
    assert "gates_closed" not in kinds(result.stdout)


def test_a_running_base_backup_closes_the_backup_gate(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    p = pg_cluster.primary
    write_job(job(pg_cluster, database, "require:\n  - noBackupRunning: true\n", connection="primary"))
    target = tmp_path / "backup"
    backup = subprocess.Popen(
        [
            *(str(bin_dir() / "pg_basebackup"), "-h", str(p.socket_dir), "-p", str(p.port), "-U", "postgres"),
            *("-D", str(target), "--max-rate=32k", "-X", "none", "--no-sync"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not p.query("select count(*) from pg_stat_progress_basebackup")[0][0]:
            assert time.monotonic() < deadline, "the base backup never started"
            time.sleep(0.05)
        result = run_job(tmp_path)
    finally:
        backup.kill()
        backup.wait()
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(tmp_path)
    assert summary["result"] == "gated" and "base backup (pid" in summary["gated"][0]
    assert not (tmp_path / "worked").exists()


def test_a_low_level_backup_in_progress_closes_the_gate_until_it_stops(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(job(pg_cluster, database, "require:\n  - noBackupRunning: true\n", connection="primary"))
    with pg_cluster.primary.connect(dbname=database, application_name="backup-tool") as tool:
        tool.execute("select pg_backup_start('nightly', fast => true)")
        during = run_job(tmp_path)
        tool.execute("select * from pg_backup_stop(wait_for_archive => false)")
    after = run_job(tmp_path)
    assert during.returncode == 0 and summary_of(tmp_path)["result"] == "succeeded"  # the second run's
    assert '"gated"' in during.stdout and "low-level backup started by pid" in during.stdout
    assert "backup-tool" in during.stdout
    assert after.returncode == 0 and (tmp_path / "worked").exists()


def test_a_custom_gate_is_a_check_and_a_closed_step_gate_skips_only_its_step(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    p = pg_cluster.primary
    with p.connect(dbname=database) as conn:
        conn.execute("create table flags (name text)")
    write_job(
        f"""
        connections:
          pg: {p.connection_yaml(database)}
        gates:
          require:
            - name: maintenance window open
              type: shell
              inline: echo open
              expected: open
        steps:
          flagged:
            gates:
              require:
                - name: release flag set
                  type: pg
                  inline: "select count(*) as n from flags where name = 'release'"
                  expected: "{{n}}={{1}}"
            commands:
              - inline: touch flagged
          other:
            commands:
              - inline: touch other
        """
    )
    result = run_job(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "other").exists() and not (tmp_path / "flagged").exists()
    skipped = [json.loads(line) for line in result.stdout.splitlines() if '"step_skipped"' in line]
    assert skipped[0]["step"] == "flagged" and "release flag set" in skipped[0]["reason"]
    with p.connect(dbname=database) as conn:
        conn.execute("insert into flags values ('release')")
    assert run_job(tmp_path).returncode == 0 and (tmp_path / "flagged").exists()


@pytest.mark.parametrize(
    ("gate", "problem"),
    [
        ("- maxReplicationLag: 10 parsecs", "expected WAL bytes"),
        ("- {maxTransactionAge: 5m, noBackupRunning: true}", "one condition per gate"),
        ("- {maxTransactionAge: 5m, connection: nowhere}", "no connection named 'nowhere'"),
        ("- {noBackupRunning: false}", "gates nothing"),
        ("- {name: x}", "a gate needs a condition"),
    ],
)
def test_bad_gates_are_refused_with_their_line(
    write_job: Write, tmp_path: pathlib.Path, gate: str, problem: str
) -> None:
    write_job(
        "connections:\n  pg: {conn_params: {host: /tmp}}\n"
        f"gates:\n  require:\n    {gate}\n"
        "steps:\n  s: {commands: [{inline: 'true'}]}\n"
    )
    result = run_pgquartz("validate", "job.yml", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert problem in result.stderr and "job.yml:" in result.stderr
