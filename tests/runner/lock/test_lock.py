"""The etcd lock with real etcd and real runners: exclusion, order, timeouts, release, loss."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

from tests.conftest import PGQUARTZ, processes_with_marker, run_pgquartz
from tests.support.etcdcluster import EtcdCluster
from tests.support.pgcluster import PgCluster

Write = Callable[..., pathlib.Path]


def lock_yaml(endpoints: list[str], key: str, ttl: str = "3s") -> str:
    return f"etcdConfig: {{endpoints: {json.dumps(endpoints)}, lockKey: {key}, lockTimeout: {ttl}}}\n"


def start(job: pathlib.Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PGQUARTZ, "-c", str(job), "--kill-grace", "1", *extra],
        cwd=job.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def nodes(tmp_path: pathlib.Path, names: tuple[str, ...], job_text: str) -> list[pathlib.Path]:
    """One directory per runner ("node"), each with the same job file; returns the job files."""
    jobs = []
    for name in names:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "job.yml").write_text(job_text)
        jobs.append(directory / "job.yml")
    return jobs


def wait_for(path: pathlib.Path, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return time.monotonic()


def test_steps_run_under_the_lock_and_checks_after_its_release(
    write_job: Write, tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    etcdctl = str(pathlib.Path(PGQUARTZ[0]).with_name("etcdctl"))
    endpoints = ",".join(etcd.endpoints)
    write_job(
        lock_yaml(etcd.endpoints, key)
        + f"""
        steps:
          s:
            commands:
              - inline: 'echo "$PGQ_LOCK_REVISION" > revision'
              - inline: '{etcdctl} --endpoints {endpoints} get --prefix /pgquartz/{key}// --keys-only >during'
        checks:
          - inline: '{etcdctl} --endpoints {endpoints} get --prefix /pgquartz/{key}// --keys-only'
            unexpected: /pgquartz/
        """.replace("\n        ", "\n")
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "during").read_text().startswith(f"/pgquartz/{key}//")
    assert int((tmp_path / "revision").read_text()) > 0


def test_fencing_tokens_grow_and_reach_sql(
    write_job: Write, tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster, database: str
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    p = pg_cluster.primary
    write_job(
        lock_yaml(etcd.endpoints, key)
        + f"""
        connections:
          pg: {p.connection_yaml(database)}
        steps:
          s:
            commands:
              - {{type: pg, inline: "create table if not exists fence (rev bigint)"}}
              - {{type: pg, inline: "insert into fence values (:lock_revision::bigint)"}}
              - {{inline: 'echo "$PGQ_LOCK_REVISION" >> revisions'}}
        """.replace("\n        ", "\n")
    )
    for _ in range(3):
        assert run_pgquartz("-c", "job.yml", cwd=tmp_path).returncode == 0
    shell = [int(line) for line in (tmp_path / "revisions").read_text().split()]
    sql = [row[0] for row in p.connect(dbname=database).execute("select rev from fence").fetchall()]
    assert shell == sql and shell == sorted(shell) and len(set(shell)) == 3


def test_waiters_run_one_after_another_in_arrival_order(
    write_job: Write, tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    jobs = []
    for index in range(3):
        directory = tmp_path / f"node{index}"
        directory.mkdir()
        job = directory / "job.yml"
        job.write_text(
            lock_yaml(etcd.endpoints, key, "5s")
            + (
                "steps:\n  s:\n    commands:\n"
                f"      - inline: 'echo start {index} $(date +%s.%N) >> {tmp_path}/log; touch started;"
                f" sleep 0.5; echo end {index} $(date +%s.%N) >> {tmp_path}/log'\n"
            )
        )
        jobs.append(job)
    processes = []
    for job in jobs:
        processes.append(start(job))
        wait_for(job.parent / "started") if not processes[1:] else time.sleep(0.3)
    for process in processes:
        assert process.wait(timeout=30) == 0, process.communicate()
    lines = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert [(kind, who) for kind, who, _ in lines] == [
        ("start", "0"),
        ("end", "0"),
        ("start", "1"),
        ("end", "1"),
        ("start", "2"),
        ("end", "2"),
    ]
    assert "waiting for the etcd lock" in processes[2].communicate()[0]


def test_mutual_exclusion_is_proven_by_an_exclusion_constraint(
    tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster, database: str
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    p = pg_cluster.primary
    with p.connect(dbname=database) as conn:
        conn.execute("create extension if not exists btree_gist")
        conn.execute(
            "create table runs (runner text, round int, during tstzrange,"
            " exclude using gist (during with &&))"
        )
    runners, rounds = 5, 4
    templates = []
    for index in range(runners):
        directory = tmp_path / f"runner{index}"
        directory.mkdir()
        template = (
            lock_yaml(etcd.endpoints, key, "5s")
            + f"""
connections:
  pg: {p.connection_yaml(database)}
steps:
  work:
    commands:
      - {{type: pg, inline: "select now() as t0, pg_sleep(0.1)"}}
      - inline: 'sleep 0.05'
      - type: pg
        inline: >
          insert into runs select :runner, :round::int,
          tstzrange(clock_timestamp() - interval '0.15 second', clock_timestamp())
    matrix:
      runner: ["{index}"]
      round: ["ROUND"]
checks:
  - type: pg
    inline: "select count(*) as mine from runs where runner = '{index}' and round = ROUND"
    expected: "{{mine}}={{1}}"
"""
        )
        templates.append((directory / "job.yml", template))
    for round_number in range(rounds):
        processes = []
        for job, template in templates:
            job.write_text(template.replace("ROUND", str(round_number)))
            processes.append(start(job))
        for process in processes:
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 0, stdout + stderr
    rows = p.connect(dbname=database).execute("select runner, round from runs order by 1, 2").fetchall()
    assert rows == [(str(r), n) for r in range(runners) for n in range(rounds)]


def test_waiting_is_bounded_by_the_timeout_with_exit_4(
    write_job: Write, tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    holder_dir = tmp_path / "holder"
    holder_dir.mkdir()
    holder = holder_dir / "job.yml"
    holder.write_text(
        lock_yaml(etcd.endpoints, key) + "steps:\n  s:\n    commands:\n"
        "      - inline: 'touch started; sleep 4'\n"
    )
    process = start(holder)
    wait_for(holder_dir / "started")
    write_job(
        lock_yaml(etcd.endpoints, key) + "timeout: 1s\nsteps:\n  s: {commands: [{inline: touch ran}]}\n"
    )
    started = time.monotonic()
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 4 and time.monotonic() - started < 4
    assert "lock was not acquired within the timeout" in result.stderr
    assert not (tmp_path / "ran").exists()
    assert process.wait(timeout=20) == 0


def test_etcd_down_at_start_is_retried_until_the_timeout_then_exit_4_with_the_last_error(
    write_job: Write, tmp_path: pathlib.Path
) -> None:
    write_job(
        lock_yaml(["127.0.0.1:1"], "nowhere")
        + "timeout: 3s\nsteps:\n  s: {commands: [{inline: touch ran}]}\n"
    )
    started = time.monotonic()
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    assert "cannot take the etcd lock 'nowhere': etcd unusable for" in result.stderr
    assert "(last error: etcd is unreachable" in result.stderr
    assert "retrying on the other members" in result.stdout + result.stderr
    assert not (tmp_path / "ran").exists()
    assert 2.5 < took < 8, took


def test_bad_etcd_credentials_are_not_retried(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job(
        "etcdConfig: {endpoints: ['127.0.0.1:1'], lockKey: x, username: u, passwordFile: /nonexistent}\n"
        "timeout: 30s\nsteps:\n  s: {commands: [{inline: touch ran}]}\n"
    )
    started = time.monotonic()
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert "cannot take the etcd lock 'x'" in result.stderr and "/nonexistent" in result.stderr
    assert time.monotonic() - started < 10


def test_sigterm_releases_the_lock_at_once_and_stops_children(
    tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    marker = f"pgq-test-{uuid.uuid4().hex}"
    jobs = nodes(
        tmp_path,
        ("first", "second"),
        lock_yaml(etcd.endpoints, key, "30s")
        + f"steps:\n  s:\n    commands:\n      - inline: 'touch started; exec -a {marker} sleep 300'\n",
    )
    first, second = (job.parent for job in jobs)
    holder = start(first / "job.yml")
    wait_for(first / "started")
    waiter = start(second / "job.yml")
    time.sleep(0.5)
    assert not (second / "started").exists()
    holder.send_signal(signal.SIGTERM)
    terminated = time.monotonic()
    assert holder.wait(timeout=15) == 143
    took_over = wait_for(second / "started", timeout=10)
    assert took_over - terminated < 5  # far less than the 30 s TTL: released, not expired
    print(f"\nSIGTERMed holder: next holder started {took_over - terminated:.2f}s later (TTL 30s)")
    assert len(processes_with_marker(marker)) == 1  # only the new holder's command
    waiter.send_signal(signal.SIGTERM)
    assert waiter.wait(timeout=15) == 143
    assert processes_with_marker(marker) == []


def test_a_killed_holder_blocks_the_next_until_its_lease_expires(
    tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    jobs = nodes(
        tmp_path,
        ("first", "second"),
        lock_yaml(etcd.endpoints, key, "3s")
        + "steps:\n  s:\n    commands:\n      - inline: 'touch started; sleep 30'\n",
    )
    first, second = (job.parent for job in jobs)
    holder = start(first / "job.yml")
    wait_for(first / "started")
    waiter = start(second / "job.yml")
    holder.kill()
    killed = time.monotonic()
    took_over = wait_for(second / "started", timeout=20)
    assert took_over - killed >= 2.0  # not before the lease (3 s TTL) can expire
    print(f"\nSIGKILLed holder: next holder started {took_over - killed:.2f}s later (TTL 3s)")
    waiter.kill()
    waiter.wait()


def test_a_revoked_lease_stops_the_commands_with_exit_5(
    write_job: Write, tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    marker = f"pgq-test-{uuid.uuid4().hex}"
    job = write_job(
        lock_yaml(etcd.endpoints, key, "3s") + "steps:\n  s:\n    commands:\n"
        f"      - inline: 'touch started; exec -a {marker} sleep 300'\n"
        "checks:\n  - inline: touch checked\n"
    )
    process = start(job, "--summary-file", "summary.json")
    wait_for(tmp_path / "started")
    [entry] = [
        line for line in etcd.etcdctl("get", "--prefix", f"/pgquartz/{key}//", "--keys-only").split() if line
    ]
    etcd.etcdctl("lease", "revoke", entry.rsplit("/", 1)[1])
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 5, stdout + stderr
    assert "lost the etcd lock" in stderr
    assert processes_with_marker(marker) == []
    assert not (tmp_path / "checked").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["result"] == "lock-lost"


def test_lock_status_shows_the_holder_and_the_waiters_in_order(
    tmp_path: pathlib.Path, etcd: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    text = lock_yaml(etcd.endpoints, key, "10s") + (
        "steps:\n  s:\n    commands:\n      - inline: 'touch started; sleep 30'\n"
    )
    directories = [tmp_path / name for name in ("a", "b", "c")]
    processes = []
    for directory in directories:
        directory.mkdir()
        (directory / "nightly.yml").write_text(text)
        processes.append(start(directory / "nightly.yml"))
        if directory.name == "a":
            wait_for(directory / "started")
        time.sleep(0.3)
    job = str(directories[0] / "nightly.yml")
    try:
        shown = run_pgquartz("lock", "status", job, cwd=tmp_path)
        data = json.loads(run_pgquartz("lock", "status", "--json", "-c", job, cwd=tmp_path).stdout)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
    assert shown.returncode == 0, shown.stderr
    assert f"lock '{key}'" in shown.stdout and "held by" in shown.stdout and "(job nightly)" in shown.stdout
    assert "waiting (2), in the order they will run:" in shown.stdout
    assert data["holder"]["pid"] == processes[0].pid
    assert [waiter["pid"] for waiter in data["waiting"]] == [processes[1].pid, processes[2].pid]
    assert data["holder"]["revision"] < data["waiting"][0]["revision"] < data["waiting"][1]["revision"]
    free = json.loads(run_pgquartz("lock", "status", "--json", job, cwd=tmp_path).stdout)
    assert free["holder"] is None and free["waiting"] == []


def test_lock_status_without_etcd_config_or_etcd(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("steps: {s: {commands: [{inline: 'true'}]}}\n")
    assert run_pgquartz("lock", "status", "job.yml", cwd=tmp_path).returncode == 2
    write_job(lock_yaml(["127.0.0.1:1"], "x") + "steps: {s: {commands: [{inline: 'true'}]}}\n")
    down = run_pgquartz("lock", "status", "job.yml", cwd=tmp_path)
    assert down.returncode == 4 and "cannot read the etcd lock 'x'" in down.stderr


def test_a_lost_lock_cancels_running_queries_on_the_server(
    write_job: Write, tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster, database: str
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    marker = f"sleeper_{uuid.uuid4().hex[:8]}"
    p = pg_cluster.primary
    job = write_job(
        lock_yaml(etcd.endpoints, key, "3s")
        + f"""
connections:
  pg: {p.connection_yaml(database)}
steps:
  s:
    commands:
      - {{type: pg, inline: "select pg_sleep(60) as {marker}"}}
"""
    )
    process = start(job)
    deadline = time.monotonic() + 15
    while p.backends_running(marker) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    [entry] = [k for k in etcd.etcdctl("get", "--prefix", f"/pgquartz/{key}//", "--keys-only").split() if k]
    etcd.etcdctl("lease", "revoke", entry.rsplit("/", 1)[1])
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 5, stderr
    assert p.backends_running(marker) == 0


def test_etcdctl_lock_and_pgquartz_exclude_each_other(tmp_path: pathlib.Path, etcd: EtcdCluster) -> None:
    """Go's mutex (``etcdctl lock``, as PgQuartz takes it) and pgquartz share one line of waiters."""
    key = f"k{uuid.uuid4().hex[:8]}"
    etcdctl = str(pathlib.Path(PGQUARTZ[0]).with_name("etcdctl"))
    go_lock = [etcdctl, "--endpoints", ",".join(etcd.endpoints), "lock", f"/pgquartz/{key}/", "--"]
    log = tmp_path / "log"
    [job] = nodes(
        tmp_path,
        ("node",),
        lock_yaml(etcd.endpoints, key, "10s")
        + f"steps:\n  s:\n    commands:\n      - inline: 'echo pgquartz start >> {log}; sleep 1;"
        f" echo pgquartz end >> {log}'\n",
    )
    go = subprocess.Popen(
        [*go_lock, "sh", "-c", f"echo go start >> {log}; sleep 1.5; echo go end >> {log}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not log.exists():
        assert time.monotonic() < deadline and go.poll() is None, go.communicate()
        time.sleep(0.02)
    runner = start(job)
    time.sleep(0.5)  # pgquartz is in line behind the Go holder: a Go waiter joins behind it
    go_waiter = subprocess.Popen(
        [*go_lock, "sh", "-c", f"echo go2 start >> {log}; echo go2 end >> {log}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = runner.communicate(timeout=30)
    assert runner.returncode == 0, stdout + stderr
    assert go.wait(timeout=30) == 0 and go_waiter.wait(timeout=30) == 0
    assert log.read_text().split("\n") == [
        "go start",
        "go end",
        "pgquartz start",
        "pgquartz end",
        "go2 start",
        "go2 end",
        "",
    ]
    assert "waiting for the etcd lock" in stdout
