"""A failover in the middle of a run, on a real primary and streaming standby (a cluster per test:
each one promotes its standby).

The job's connection lists both servers with ``target_session_attrs=read-write``,
as a client of an HA cluster does. The primary is stopped and the standby
promoted while commands run; on reconnect the runner reaches the new primary,
sees the timeline move, and aborts (exit 6) or, with ``onFailover: continue``,
finishes the work there.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import PGQUARTZ, dedent
from tests.support.pgcluster import PgCluster, running_cluster

pytestmark = pytest.mark.slow

ROWS = 60


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with running_cluster() as fresh:
        fresh.primary.query("create table progress (i int primary key)")
        fresh.wait_replicated()
        yield fresh


def both_servers(cluster: PgCluster) -> str:
    p, s = cluster.primary, cluster.standby
    return (
        f'host: "{p.socket_dir},{s.socket_dir}", port: "{p.port},{s.port}", user: postgres,'
        " dbname: postgres, target_session_attrs: read-write, connect_timeout: 2"
    )


def job_text(cluster: PgCluster, *connection_extra: str) -> str:
    extra = "".join(f"\n    {line}" for line in connection_extra)
    return (
        dedent(
            f"""
        connections:
          pg:
            role: primary
            conn_params: {{{both_servers(cluster)}}}
        """
        )
        + extra.lstrip("\n")
        + "\n"
        + dedent(
            f"""
        steps:
          work:
            matrix: {{i: [{", ".join(str(i) for i in range(ROWS))}]}}
            commands:
              - {{type: pg, inline: "insert into progress values (:i::int) on conflict do nothing"}}
              - {{type: pg, inline: "select pg_sleep(0.05)"}}
        """
        )
    )


def start(job: pathlib.Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *PGQUARTZ,
            "run",
            str(job),
            "--summary-file",
            str(job.parent / "summary.json"),
            "--log-format",
            "json",
        ],
        cwd=job.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fail_over(cluster: PgCluster) -> None:
    """Once some work is done: stop the primary, promote the standby (as an HA manager would)."""
    deadline = time.monotonic() + 30
    while cluster.primary.query("select count(*) from progress")[0][0] < 5:
        assert time.monotonic() < deadline, "the job never started working"
        time.sleep(0.02)
    cluster.primary.stop("fast")
    cluster.standby.run("pg_ctl", "-D", str(cluster.standby.datadir), "-w", "promote")


def events(stdout: str, kind: str) -> list[dict[str, object]]:
    found = []
    for line in stdout.splitlines():
        record = json.loads(line)
        if record["event"] == kind:
            found.append(record)
    return found


def test_a_failover_mid_run_is_detected_on_reconnect_and_aborts_with_exit_6(
    tmp_path: pathlib.Path, cluster: PgCluster
) -> None:
    job = tmp_path / "job.yml"
    job.write_text(
        job_text(cluster, "retry: {on: [admin_shutdown, connection_failure], attempts: 20, backoff: 100ms}")
    )
    process = start(job)
    fail_over(cluster)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 6, stdout + stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["result"] == "failover" and summary["exitCode"] == 6
    assert summary["failover"]["before"]["timeline"] == 1 and summary["failover"]["after"]["timeline"] == 2
    assert summary["failover"]["action"] == "abort"
    assert any("timeline 1 → 2" in change for change in summary["failover"]["changes"])
    [seen] = events(stdout, "failover")
    assert seen["connection"] == "pg" and seen["action"] == "abort"
    done = cluster.standby.query("select count(*) from progress")[0][0]
    assert done < ROWS  # it stopped: the rest of the work did not run on the new primary


def test_with_on_failover_continue_the_work_finishes_on_the_new_primary(
    tmp_path: pathlib.Path, cluster: PgCluster
) -> None:
    job = tmp_path / "job.yml"
    job.write_text(
        job_text(
            cluster,
            "onFailover: continue",
            "retry: {on: [admin_shutdown, connection_failure], attempts: 40, backoff: 100ms}",
        )
    )
    process = start(job)
    fail_over(cluster)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    [seen] = events(stdout, "failover")
    assert seen["action"] == "continue" and seen["after"]["timeline"] == 2  # type: ignore[index]
    assert events(stdout, "command_retried")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["result"] == "succeeded" and summary["retries"] >= 1
    assert summary["failover"]["after"]["role"] == "primary"
    assert cluster.standby.query("select count(*) from progress")[0][0] == ROWS


def test_a_standby_promoted_under_an_open_session_is_noticed_before_the_next_command(
    tmp_path: pathlib.Path, cluster: PgCluster
) -> None:
    s = cluster.standby
    job = tmp_path / "job.yml"
    job.write_text(
        dedent(
            f"""
            connections:
              replica:
                role: standby
                conn_params: {{host: "{s.socket_dir}", port: {s.port}, user: postgres, dbname: postgres}}
            steps:
              read:
                matrix: {{i: [{", ".join(str(i) for i in range(ROWS))}]}}
                commands:
                  - {{type: replica, inline: "select pg_sleep(0.05), :i as i"}}
            """
        )
    )
    process = start(job)
    time.sleep(1.0)  # a few commands ran on the standby's one session
    s.run("pg_ctl", "-D", str(s.datadir), "-w", "promote")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 6, stdout + stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "role standby → primary" in summary["failover"]["changes"]
    finished = events(stdout, "command_finished")
    assert 0 < len(finished) < ROWS
