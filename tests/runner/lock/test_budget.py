"""Budgets: at most ``slots`` runs at once on one database cluster, across jobs, with real etcd and
PostgreSQL (a second cluster for a job that must not wait)."""

from __future__ import annotations

import json
import pathlib
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import processes_with_marker, run_pgquartz
from tests.runner.lock.test_lock import nodes, start, wait_for
from tests.support.etcdcluster import EtcdCluster
from tests.support.pgcluster import PgCluster, PgServer, running_cluster

WORK = 1.0
"""Seconds each run's step takes."""


@pytest.fixture(scope="module")
def other_cluster() -> Iterator[PgCluster]:
    with running_cluster() as cluster:
        yield cluster


def budget_job(etcd: EtcdCluster, server: PgServer, key: str, ledger: pathlib.Path, budget: str) -> str:
    return (
        f"etcdConfig: {{endpoints: {json.dumps(etcd.endpoints)}, lockKey: {key}, lockTimeout: 5s,"
        f" budget: {budget}}}\n"
        f"connections:\n  pg: {server.connection_yaml('postgres')}\n"
        "steps:\n  work:\n    commands:\n"
        f'      - inline: \'echo "start $(date +%s.%N) $PGQ_BUDGET_SLOT $PGQ_BUDGET_KEY" >> {ledger};'
        f' sleep {WORK}; echo "end $(date +%s.%N) $PGQ_BUDGET_SLOT" >> {ledger}\'\n'
        "      - {type: pg, inline: 'select :budget_slot::int as slot'}\n"
    )


def most_at_once(ledgers: list[pathlib.Path]) -> tuple[int, list[tuple[float, float, str]]]:
    runs = []
    for ledger in ledgers:
        [begin, end] = [line.split() for line in ledger.read_text().splitlines()]
        runs.append((float(begin[1]), float(end[1]), begin[2]))
    edges = sorted([(t0, 1) for t0, _, _ in runs] + [(t1, -1) for _, t1, _ in runs])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak, runs


def test_six_jobs_on_one_cluster_share_two_slots_and_another_clusters_job_does_not_wait(
    tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster, other_cluster: PgCluster
) -> None:
    """No key: the budget is the cluster's (its system_identifier), so jobs reaching it through the
    primary and through the standby share it, and a job on another cluster runs beside them."""
    tag = uuid.uuid4().hex[:8]
    ledgers = [tmp_path / f"ledger{index}" for index in range(6)]
    servers = [pg_cluster.primary, pg_cluster.standby] * 3
    jobs = []
    for index, (ledger, server) in enumerate(zip(ledgers, servers, strict=True)):
        [job] = nodes(
            tmp_path,
            (f"n{index}",),
            budget_job(etcd, server, f"b{tag}{index}", ledger, "{slots: 2}"),
        )
        jobs.append(job)
    outsider_ledger = tmp_path / "outsider"
    [outsider] = nodes(
        tmp_path,
        ("outsider-node",),
        budget_job(etcd, other_cluster.primary, f"b{tag}out", outsider_ledger, "{slots: 2}"),
    )
    started = time.monotonic()
    processes = [start(job, "--summary-file", "summary.json") for job in jobs]
    time.sleep(0.5)  # the six are in line: two hold the slots
    outsider_process = start(outsider)
    outcomes = [process.communicate(timeout=60) for process in (*processes, outsider_process)]
    took = time.monotonic() - started
    for process, (stdout, stderr) in zip((*processes, outsider_process), outcomes, strict=True):
        assert process.returncode == 0, stdout + stderr
    peak, runs = most_at_once(ledgers)
    assert peak == 2  # never three at once, and two at a time: not one after another
    assert {slot for _, _, slot in runs} == {"1", "2"}
    for first in runs:  # two runs that overlap hold different slots
        for second in runs:
            if first is not second and first[0] < second[1] and second[0] < first[1]:
                assert first[2] != second[2]
    identifier = pg_cluster.primary.query("select system_identifier::text from pg_control_system()")[0][0]
    keys = {
        line.split()[3] for ledger in ledgers for line in ledger.read_text().splitlines() if "start" in line
    }
    assert keys == {f"cluster-{identifier}"}
    held = [json.loads((job.parent / "summary.json").read_text())["budget"] for job in jobs]
    assert {entry["key"] for entry in held} == {f"cluster-{identifier}"}
    waits = sorted(entry["waited"] for entry in held)
    assert waits[1] < WORK / 2 and waits[-1] > 1.5 * WORK  # the first two at once, the last two rounds later
    assert took < 3 * WORK + 8, took  # about three rounds, plus each runner's start
    assert sum("waiting for a slot of budget" in stdout for stdout, _ in outcomes[:6]) >= 3
    outsider_start, _, _ = most_at_once([outsider_ledger])[1][0]
    first_round_end = sorted(end for _, end, _ in runs)[1]
    assert outsider_start < first_round_end  # it did not wait for the first cluster's budget
    assert "waiting for a slot" not in outcomes[6][0]


def test_a_killed_slot_holder_frees_its_slot_when_its_lease_expires(
    tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster
) -> None:
    tag = uuid.uuid4().hex[:8]
    budget = f"{{slots: 1, key: maintenance-{tag}}}"
    holder_ledger, next_ledger = tmp_path / "holder", tmp_path / "next"
    marker = f"pgq-test-{uuid.uuid4().hex}"
    holder_text = budget_job(etcd, pg_cluster.primary, f"h{tag}", holder_ledger, budget).replace(
        f"sleep {WORK}", f"exec -a {marker} sleep 60"
    )
    [holder_job] = nodes(tmp_path, ("h",), holder_text)
    [next_job] = nodes(tmp_path, ("n",), budget_job(etcd, pg_cluster.primary, f"n{tag}", next_ledger, budget))
    holder = start(holder_job)
    deadline = time.monotonic() + 20
    while not holder_ledger.exists():
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.02)
    waiter = start(next_job)
    time.sleep(1.0)
    assert not next_ledger.exists()  # its own lock is free, the budget's one slot is not
    holder.kill()
    killed = time.monotonic()
    wait_for(next_ledger, timeout=20)
    took = time.monotonic() - killed
    assert 2.5 < took < 10, took  # not before the holder's lease (TTL 5 s) could expire
    assert waiter.wait(timeout=30) == 0
    for orphan in processes_with_marker(marker):  # a runner killed outright leaves its command behind
        orphan.kill()


def test_a_budget_is_shown_by_plan_and_needs_a_key_without_connections(tmp_path: pathlib.Path) -> None:
    steps = "steps:\n  s: {commands: [{inline: 'true'}]}\n"
    (tmp_path / "keyless.yml").write_text("etcdConfig: {budget: {slots: 2}}\n" + steps)
    refused = run_pgquartz("validate", "-c", "keyless.yml", cwd=tmp_path)
    assert refused.returncode == 2
    assert (
        "keyless.yml:1:" in refused.stderr and "etcdConfig.budget: a budget without a key" in refused.stderr
    )
    (tmp_path / "keyed.yml").write_text("etcdConfig: {budget: {slots: 3, key: reindex}}\n" + steps)
    shown = run_pgquartz("plan", "keyed.yml", cwd=tmp_path)
    assert "budget: 3 at once, key 'reindex'; a slot is taken once the lock is held" in shown.stdout
    (tmp_path / "by-cluster.yml").write_text(
        "etcdConfig: {budget: {slots: 2}}\nconnections: {pg: {conn_params: {host: db}}}\n" + steps
    )
    data = json.loads(run_pgquartz("plan", "--json", "by-cluster.yml", cwd=tmp_path).stdout)
    assert data["lock"]["budget"] == {"slots": 2, "key": None, "clusterOf": "pg"}


def test_a_scope_keeps_budgets_with_the_same_key_or_cluster_apart() -> None:
    from pgquartz.runner.model.job import BudgetConfig

    assert BudgetConfig.from_data({"slots": 1}).etcd_key("7301") == "cluster-7301"
    assert BudgetConfig.from_data({"slots": 1, "scope": "db"}).etcd_key("7301") == "db/cluster-7301"
    assert BudgetConfig.from_data({"slots": 1, "key": "k", "scope": "db"}).etcd_key(None) == "db/k"


def test_waiting_for_a_slot_is_bounded_by_the_timeout_and_says_so(
    tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster
) -> None:
    tag = uuid.uuid4().hex[:8]
    budget = f"{{slots: 1, key: heavy-{tag}}}"
    marker = f"pgq-test-{uuid.uuid4().hex}"
    holder_text = budget_job(etcd, pg_cluster.primary, f"h{tag}", tmp_path / "held", budget).replace(
        f"sleep {WORK}", f"exec -a {marker} sleep 30"
    )
    [holder_job] = nodes(tmp_path, ("holder",), holder_text)
    late_text = "timeout: 2s\n" + budget_job(
        etcd, pg_cluster.primary, f"l{tag}", tmp_path / "late-ledger", budget
    )
    [late_job] = nodes(tmp_path, ("late",), late_text)
    holder = start(holder_job)
    try:
        wait_for(tmp_path / "held")
        started = time.monotonic()
        result = run_pgquartz("-c", str(late_job), cwd=late_job.parent)
        assert result.returncode == 4, result.stdout + result.stderr
        assert time.monotonic() - started < 6
        assert "the lock was not acquired (with a slot of its budget) within the timeout" in result.stderr
        assert not (tmp_path / "late-ledger").exists()  # nothing ran
    finally:
        holder.terminate()
        holder.wait(timeout=20)
    assert processes_with_marker(marker) == []  # SIGTERM stopped the holder's command
