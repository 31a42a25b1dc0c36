"""PgQuartz jobs with SQL, run with the real ``pgquartz`` against a real primary and standby."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import PGQUARTZ, run_pgquartz
from tests.support.pgcluster import PgCluster

Write = Callable[..., pathlib.Path]


def connections(
    cluster: PgCluster,
    database: str,
    *,
    primary_role: str = "primary",
    standby_role: str = "standby",
    extra: str = "",
) -> str:
    p, s = cluster.primary, cluster.standby
    return f"""
connections:
  pg:
    type: postgresql
    role: {primary_role}
    conn_params: {{host: "{p.socket_dir}", port: {p.port}, user: postgres, dbname: {database}}}
  standby:
    role: {standby_role}
    conn_params: {{host: "{s.socket_dir}", port: {s.port}, user: postgres, dbname: {database}}}
{extra}"""


def test_the_manuals_commands_and_checks_examples_run_unchanged(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        """
        steps:
          step 1:
            commands:
              - name: Run command 1.1
                type: pg
                inline: |
                  CREATE TABLE IF NOT EXISTS t1 (id int, txt text);
                  CREATE TABLE IF NOT EXISTS t2 (id int, id2 int);
              - name: Run command 1.2
                type: shell
                inline: "echo 'Done that' > beenhere.txt"
          step 2:
            depends: [step 1]
            commands:
              - name: Run step 2.1
                type: shell
                inline: 'touch "${PGQ_INSTANCE_ARG1}_${PGQ_INSTANCE_ARG2}"'
              - name: Run step 2.2
                type: pg
                inline: insert into t1 (id, txt) values(:arg1::integer, :arg2)
            matrix:
              arg1: ["1", "2"]
              arg2: ["A", "B", "C"]
        checks:
          - name: File exists
            type: shell
            inline: test -f beenhere.txt
          - name: Tables exist
            type: pg
            inline: "select * from pg_tables where schemaname='public' and tablename = :tblname"
            expected: "{tablename}="
            matrix:
              tblname: [t1, t2]
        parallel: 6
        """
        + connections(pg_cluster, database).replace("\n", "\n        ")
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = (
        pg_cluster.primary.connect(dbname=database)
        .execute("select id, txt from t1 order by id, txt")
        .fetchall()
    )
    assert rows == [(1, "A"), (1, "B"), (1, "C"), (2, "A"), (2, "B"), (2, "C")]
    assert sorted(p.name for p in tmp_path.glob("?_?")) == ["1_A", "1_B", "1_C", "2_A", "2_B", "2_C"]


def test_when_rules_read_query_output(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        f"""
        steps:
          step 2:
            commands:
              - {{type: pg, inline: select datname from pg_database}}
          step 3:
            when:
              - '.Steps["step 2"].Instances.StdOut.Contains "{{datname}}={{{database}}}"'
            commands: [{{inline: touch found}}]
          step 4:
            when:
              - '.Steps["step 2"].Instances.StdOut.Contains "{{datname}}={{nosuchdb}}"'
            commands: [{{inline: touch wrong}}]
        """
        + connections(pg_cluster, database).replace("\n", "\n        ")
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "found").exists() and not (tmp_path / "wrong").exists()


@pytest.mark.parametrize(
    ("primary_role", "standby_role", "culprit"),
    [("standby", "standby", "pg"), ("primary", "primary", "standby")],
)
def test_a_role_mismatch_stops_the_job_before_anything_runs(
    write_job: Write,
    tmp_path: pathlib.Path,
    pg_cluster: PgCluster,
    database: str,
    primary_role: str,
    standby_role: str,
    culprit: str,
) -> None:
    write_job(
        """
        steps:
          s: {commands: [{inline: touch ran}]}
        """
        + connections(pg_cluster, database, primary_role=primary_role, standby_role=standby_role).replace(
            "\n", "\n        "
        )
    )
    result = run_pgquartz("-c", "job.yml", "--summary-file", "summary.json", cwd=tmp_path)
    assert result.returncode == 3
    wrong = "primary" if culprit == "standby" else "standby"
    actual = "standby" if culprit == "standby" else "primary"
    assert f"connection '{culprit}' expects a {wrong} but reaches a {actual}" in result.stderr
    assert not (tmp_path / "ran").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["result"] == "role-mismatch"


def test_run_on_role_error_skips_commands_and_checks_against_the_wrong_server(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        """
        runOnRoleError: true
        steps:
          s:
            commands:
              - {type: pg, inline: "create table should_not_exist (id int)"}
              - {inline: touch shell-ran}
          on the real primary:
            commands:
              - {type: standby, role: all, inline: "select 1 as one"}
        checks:
          - {name: skipped check, type: pg, inline: "select 1/0"}
        """
        + connections(pg_cluster, database, primary_role="standby").replace("\n", "\n        ")
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "connection 'pg' expects a standby but reaches a primary" in result.stderr
    assert "its commands will be skipped" in result.stderr
    assert "skipped: expects a standby, 'pg' reaches a primary" in result.stdout
    assert (tmp_path / "shell-ran").exists()  # a skipped command does not fail the instance
    tables = (
        pg_cluster.primary.connect(dbname=database)
        .execute("select to_regclass('should_not_exist')")
        .fetchone()
    )
    assert tables == (None,)


def test_standby_only_commands_run_only_on_the_standby(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        """
        steps:
          s:
            matrix: {server: [pg, standby]}
            commands:
              - {type: pg, role: standby, inline: "select 'ran on pg' as r"}
              - {type: standby, role: standby, inline: "select pg_is_in_recovery() as standby"}
          report:
            when:
              - '.Steps["s"].Instances.StdOut.Contains "{standby}={t}"'
              - 'not ("ran on pg" in steps["s"].stdout)'
            commands: [{inline: touch as-expected}]
        """
        + connections(pg_cluster, database, primary_role="all", standby_role="all").replace(
            "\n", "\n        "
        )
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "as-expected").exists()


def test_timeout_cancels_a_running_query_on_the_server(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    marker = f"sleeper_{uuid.uuid4().hex[:8]}"
    write_job(
        f"""
        timeout: 1s
        steps:
          s: {{commands: [{{type: pg, inline: 'select pg_sleep(60) as {marker}'}}]}}
        """
        + connections(pg_cluster, database).replace("\n", "\n        ")
    )
    started = time.monotonic()
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 1 and time.monotonic() - started < 15
    assert "timeout" in result.stderr
    assert pg_cluster.primary.backends_running(marker) == 0


def test_sigterm_cancels_a_running_query_and_closes_the_session(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    marker = f"sleeper_{uuid.uuid4().hex[:8]}"
    write_job(
        f"""
        steps:
          s: {{commands: [{{type: pg, inline: 'select pg_sleep(60) as {marker}'}}]}}
        """
        + connections(pg_cluster, database).replace("\n", "\n        ")
    )
    process = subprocess.Popen(
        [*PGQUARTZ, "-c", "job.yml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    query = (
        "select count(*) from pg_stat_activity where application_name = 'pgquartz/job'"
        " and pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 15
    while pg_cluster.primary.query(query) == [(0,)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pg_cluster.primary.query(query) != [(0,)]
    process.terminate()
    process.communicate(timeout=15)
    assert process.returncode == 143
    assert pg_cluster.primary.query(query) == [(0,)]


def test_a_server_restarted_mid_job_fails_one_command_and_later_ones_reconnect(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, database: str
) -> None:
    write_job(
        """
        steps:
          before:
            commands: [{type: pg, inline: "create table r (step text)"}]
          restart:
            depends: [before]
            commands:
              - {type: pg, inline: "insert into r values ('before restart')"}
              - {inline: "touch restart-now; while [ ! -f restarted ]; do sleep 0.05; done"}
              - {type: pg, inline: "insert into r values ('on the dead session')"}
          after:
            depends: [restart]
            commands: [{type: pg, inline: "insert into r values ('after restart')"}]
        """
        + connections(pg_cluster, database).replace("\n", "\n        ")
    )
    process = subprocess.Popen(
        [*PGQUARTZ, "-c", "job.yml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "restart-now").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pg_cluster.primary.restart()
        (tmp_path / "restarted").touch()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stdout + stderr
    assert "'restart'" in stderr and "failed" in stderr  # the command on the dead session, clearly
    assert "Traceback" not in stderr
    rows = pg_cluster.primary.connect(dbname=database).execute("select step from r order by 1").fetchall()
    assert rows == [("after restart",), ("before restart",)]


@pytest.fixture
def password_user(pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:
    """A role that must log in with a password (scram) on the primary."""
    user, password = f"u_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    primary = pg_cluster.primary
    primary.query(f"create role {user} login password '{password}'")
    hba = primary.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"local all {user} scram-sha-256\n" + original)
    primary.query("select pg_reload_conf()")
    yield user, password
    hba.write_text(original)
    primary.query("select pg_reload_conf()")
    primary.query(f"drop role {user}")


def password_job(cluster: PgCluster, user: str, source: str) -> str:
    p = cluster.primary
    return f"""
        connections:
          pg:
            conn_params: {{host: "{p.socket_dir}", port: {p.port}, user: {user}, dbname: postgres}}
            {source}
        steps:
          s: {{commands: [{{type: pg, inline: "select current_user as me"}}]}}
        checks:
          - {{type: pg, inline: "select current_user as me", expected: "{{me}}={{{user}}}"}}
        """


def test_passwords_from_a_file_or_the_environment_log_in(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, password_user: tuple[str, str]
) -> None:
    user, password = password_user
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    write_job(password_job(pg_cluster, user, f"passwordFile: {secret}"))
    from_file = run_pgquartz("-c", "job.yml", "-d", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    write_job(password_job(pg_cluster, user, "passwordEnv: MAINT_PASSWORD"))
    from_env = run_pgquartz("-c", "job.yml", "-d", cwd=tmp_path, env={"MAINT_PASSWORD": password})
    assert from_env.returncode == 0, from_env.stderr
    assert password not in from_file.stdout + from_file.stderr + from_env.stdout + from_env.stderr


def test_a_wrong_password_is_a_clear_error_that_never_prints_it(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster, password_user: tuple[str, str]
) -> None:
    user, _ = password_user
    wrong = f"wrong-{uuid.uuid4().hex}"
    write_job(password_job(pg_cluster, user, "passwordEnv: MAINT_PASSWORD"))
    result = run_pgquartz(
        "-c", "job.yml", "-d", "--log-format", "json", cwd=tmp_path, env={"MAINT_PASSWORD": wrong}
    )
    assert result.returncode == 1
    assert "password authentication failed" in result.stdout
    assert wrong not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_missing_password_variable_is_reported(
    write_job: Write, tmp_path: pathlib.Path, pg_cluster: PgCluster
) -> None:
    write_job(password_job(pg_cluster, "postgres", "passwordEnv: PGQ_TEST_UNSET_VARIABLE"))
    env = {key: value for key, value in os.environ.items() if key != "PGQ_TEST_UNSET_VARIABLE"}
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "the environment variable PGQ_TEST_UNSET_VARIABLE (passwordEnv) is not set" in result.stderr


def test_a_wrong_host_is_a_clear_command_error(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("""
        connections:
          pg: {conn_params: {host: /nonexistent/dir, port: 5999, user: postgres}}
        steps:
          s: {commands: [{type: pg, inline: select 1}]}
        checks:
          - {type: pg, inline: select 1}
        """)
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot connect to 'pg'" in result.stderr and "Traceback" not in result.stderr
