"""The lock under etcd faults, with a real three-member cluster: leader loss, a frozen cluster."""

from __future__ import annotations

import pathlib
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import processes_with_marker
from tests.runner.lock.test_lock import lock_yaml, nodes, start, wait_for
from tests.support.etcdcluster import EtcdCluster, running_etcd


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with running_etcd(3) as etcd:
        yield etcd


def test_losing_the_leader_does_not_disturb_the_run(tmp_path: pathlib.Path, cluster: EtcdCluster) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    job = tmp_path / "job.yml"
    job.write_text(
        # A TTL with room for an election plus a retry on a loaded machine: with 6 s the watchdog's
        # window after a missed keep-alive was about one second, and it tripped once in a full run.
        lock_yaml(cluster.endpoints, key, "15s") + "steps:\n  s:\n    commands:\n"
        "      - inline: 'touch started; sleep 5; touch finished'\n"
    )
    process = start(job)
    wait_for(tmp_path / "started")
    leader = cluster.leader()
    leader.kill()
    try:
        stdout, stderr = process.communicate(timeout=30)
    finally:
        cluster.restart(leader)
        cluster.wait_healthy()
    assert process.returncode == 0, stdout + stderr
    assert (tmp_path / "finished").exists()


def test_a_frozen_cluster_stops_the_holder_before_its_lease_can_expire(
    tmp_path: pathlib.Path, cluster: EtcdCluster
) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    marker = f"pgq-test-{uuid.uuid4().hex}"
    jobs = nodes(
        tmp_path,
        ("holder", "waiter"),
        lock_yaml(cluster.endpoints, key, "4s")
        + "steps:\n  s:\n    commands:\n"
        + f"      - inline: 'date +%s.%N > started; exec -a {marker} sleep 300'\n",
    )
    holder_dir, waiter_dir = (job.parent for job in jobs)
    holder = start(holder_dir / "job.yml")
    wait_for(holder_dir / "started")
    waiter = start(waiter_dir / "job.yml")
    time.sleep(1.0)
    for member in cluster.members:
        member.pause()
    paused = time.monotonic()
    try:
        deadline = time.monotonic() + 10
        while processes_with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        holder_stopped = time.monotonic()
        assert processes_with_marker(marker) == []
        # stopped before the TTL (4 s) could have run out since the last keep-alive, which came
        # at most TTL/3 before the pause
        assert holder_stopped - paused < 4.0
        assert holder.wait(timeout=10) == 5
        # its lease lost, nothing is left to release: it exits at once rather than retrying a
        # release on the frozen members for RELEASE_TIMEOUT (5 s)
        assert time.monotonic() - holder_stopped < 2.0
        time.sleep(4.5)  # past the lease's TTL, still frozen
    finally:
        for member in cluster.members:
            member.resume()
    took_over = wait_for(waiter_dir / "started", timeout=30)
    assert took_over > holder_stopped  # never overlapping
    print(
        f"\nfrozen etcd: holder's commands gone {holder_stopped - paused:.2f}s after the pause (TTL 4s);"
        f" next holder started {took_over - paused:.2f}s after the pause"
    )
    waiter.kill()
    waiter.wait()
    assert "lost the etcd lock" in holder.communicate()[1]
