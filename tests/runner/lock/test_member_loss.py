"""Losing one etcd member of three must not fail a run; losing quorum for the whole bound still does.

The soak runs many contended runs of one job while, every second or two, one
member is killed and restarted or paused and resumed (the other two keep
quorum). Every run must succeed, and no two may ever hold the lock at once:
each run opens a ledger row ``[now, ∞)`` keyed by its fencing token when its
step starts and closes it when the step ends, under an exclusion constraint,
so an overlapping holder's insert fails at once and so does its run.
``PGQUARTZ_SOAK_RUNS`` makes the soak longer (the issue's measurement used 1000).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import run_pgquartz
from tests.runner.lock.test_lock import lock_yaml, start
from tests.support.etcdcluster import EtcdCluster, running_etcd
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.slow

RUNS = int(os.environ.get("PGQUARTZ_SOAK_RUNS", "60"))
AT_ONCE = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with running_etcd(3) as etcd:
        yield etcd


@contextlib.contextmanager
def chaos(cluster: EtcdCluster, *, seed: int) -> Iterator[list[str]]:
    """One member at a time killed and restarted, or paused for up to 3 s, until the block ends."""
    done = threading.Event()
    log: list[str] = []
    rng = random.Random(seed)

    def disturb() -> None:
        while not done.wait(rng.uniform(0.8, 1.6)):
            member = rng.choice(cluster.members)
            if rng.random() < 0.5:
                log.append(f"kill {member.name}")
                cluster.restart(member)
                done.wait(1.0)  # it rejoins before the next member is touched
            else:
                log.append(f"pause {member.name}")
                member.pause()
                done.wait(rng.uniform(1.5, 3.0))
                member.resume()

    thread = threading.Thread(target=disturb, daemon=True)
    thread.start()
    try:
        yield log
    finally:
        done.set()
        thread.join(timeout=10)
        for member in cluster.members:
            with contextlib.suppress(Exception):
                member.resume()
        cluster.wait_healthy()


def test_contended_runs_all_succeed_while_one_member_at_a_time_fails(
    tmp_path: pathlib.Path, cluster: EtcdCluster, pg_cluster: PgCluster, database: str
) -> None:
    p = pg_cluster.primary
    with p.connect(dbname=database) as conn:
        conn.execute("create extension if not exists btree_gist")
        conn.execute(
            "create table ledger (token bigint primary key, run int unique, during tstzrange not null,"
            " exclude using gist (during with &&))"
        )
    key = f"soak{uuid.uuid4().hex[:8]}"
    template = (
        lock_yaml(cluster.endpoints, key, "5s")
        + f"""
timeout: 2m
connections:
  pg: {p.connection_yaml(database)}
steps:
  work:
    commands:
      - type: pg
        inline: "insert into ledger values (:lock_revision::bigint, RUN, tstzrange(clock_timestamp(), null))"
      - {{type: pg, inline: "select pg_sleep(0.05)"}}
      - type: pg
        inline: >
          update ledger set during = tstzrange(lower(during), clock_timestamp())
          where token = :lock_revision::bigint
checks:
  - type: pg
    inline: "select count(*) as closed from ledger where run = RUN and not upper_inf(during)"
    expected: "{{closed}}={{1}}"
"""
    )
    failures: list[str] = []
    started = time.monotonic()
    with chaos(cluster, seed=RUNS) as disturbed:
        running: list[tuple[int, subprocess.Popen[str]]] = []
        for run in range(RUNS):
            directory = tmp_path / f"run{run}"
            directory.mkdir()
            job = directory / "soak.yml"
            job.write_text(template.replace("RUN", str(run)))
            running.append((run, start(job)))
            while len(running) >= AT_ONCE or (run == RUNS - 1 and running):
                number, process = running.pop(0)
                _, stderr = process.communicate(timeout=180)
                if process.returncode != 0:
                    failures.append(f"run {number}: exit {process.returncode}: {stderr.strip()[-400:]}")
    took = time.monotonic() - started
    rows = p.connect(dbname=database).execute("select count(*) from ledger where not upper_inf(during)")
    closed = rows.fetchone()
    print(
        f"\nsoak: {RUNS} runs, {AT_ONCE} at a time, in {took:.1f}s while etcd was disturbed"
        f" {len(disturbed)} times ({', '.join(disturbed[:6])}…); {len(failures)} failed"
    )
    assert failures == []
    assert closed == (RUNS,)


def test_a_cluster_without_quorum_for_longer_than_the_timeout_exits_4(
    tmp_path: pathlib.Path, cluster: EtcdCluster
) -> None:
    (tmp_path / "job.yml").write_text(
        lock_yaml(cluster.endpoints, f"q{uuid.uuid4().hex[:8]}", "5s")
        + "timeout: 4s\nsteps:\n  s: {commands: [{inline: touch ran}]}\n"
    )
    for member in cluster.members[:2]:
        member.pause()
    started = time.monotonic()
    try:
        result = run_pgquartz("-c", "job.yml", cwd=tmp_path, timeout=60)
    finally:
        for member in cluster.members[:2]:
            member.resume()
        cluster.wait_healthy()
    took = time.monotonic() - started
    assert result.returncode == 4, result.stdout + result.stderr
    assert 3.5 < took < 10, took
    assert "cannot take the etcd lock" in result.stderr and "last error" in result.stderr
    assert not (tmp_path / "ran").exists()
