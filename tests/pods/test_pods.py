"""The whole path with real images and real processes: PgQuartzJob → CronJob → Job → pod → runner → status.

The operator runs as its own process against the emulated API; tests/support/kubelet.py plays the
Job controller and the kubelet, running each pod's container with podman (the runner image built from
images/runner) as its spec says, against the embedded PostgreSQL primary and standby and etcd.
"""

from __future__ import annotations

import copy
import json
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import images
from tests.support.etcdcluster import EtcdCluster
from tests.support.kube import OperatorCluster, operator_cluster, secret_manifest
from tests.support.kubelet import Kubelet
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.skipif(bool(images.MISSING), reason=images.WHY_NOT)
NAMESPACE = "databases"


@pytest.fixture(scope="module")
def runner_image() -> str:
    return images.built()["runner"]


@pytest.fixture
def cluster(tmp_path: pathlib.Path, etcd: EtcdCluster, runner_image: str) -> Iterator[OperatorCluster]:
    environment = {"PGQUARTZ_ETCD_ENDPOINTS": ",".join(etcd.endpoints), "PGQUARTZ_RECHECK_SECONDS": "1"}
    with operator_cluster(tmp_path, namespace=NAMESPACE, environment=environment) as running:
        running.kubectl(
            "apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-maint", {"password": "x"})
        )
        yield running


@pytest.fixture
def kubelet(cluster: OperatorCluster, pg_cluster: PgCluster) -> Iterator[Kubelet]:
    url = next(c["cluster"]["server"] for c in _kubeconfig(cluster)["clusters"])
    socket_dir = str(pg_cluster.primary.socket_dir)
    playing = Kubelet(url, NAMESPACE, mounts=[(socket_dir, socket_dir)])
    yield playing
    shutil.rmtree(playing.scratch, ignore_errors=True)  # the pods' ConfigMap files


def _kubeconfig(cluster: OperatorCluster) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cluster.kubeconfig.read_text())
    return data


def connection(
    pg_cluster: PgCluster, database: str, *, role: str = "primary", port: int = 5432
) -> dict[str, Any]:
    return {
        "role": role,
        "params": {
            "host": str(pg_cluster.primary.socket_dir),
            "port": str(port),
            "user": "postgres",
            "dbname": database,
        },
        "passwordSecretRef": {"name": "pg-maint", "key": "password"},
    }


def pgqj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"schedule": "15 23 * * *", **spec},
    }


def apply(cluster: OperatorCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(obj))


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == kind), {})


def run_now(cluster: OperatorCluster, kubelet: Kubelet, name: str, value: str = "1") -> dict[str, Any]:
    """Wait for Ready, ask for a run, let the kubelet run its Job, and return the resource once its
    status shows the run."""
    cluster.eventually(
        lambda: condition(cluster.get("pgqj", name), "Ready").get("status") == "True", within=30
    )
    cluster.kubectl("annotate", "pgqj", name, f"pgquartz.io/run-now={value}", "--overwrite")
    cluster.eventually(kubelet.unfinished_jobs, within=30)
    [job] = kubelet.run_pending()
    job_name = job["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        obj = cluster.get("pgqj", name)
        last = (obj or {}).get("status", {}).get("lastRun") or {}
        return obj if last.get("job") == job_name and last.get("result") else None

    found: dict[str, Any] = cluster.eventually(finished, within=30)
    return found


VACUUM = {
    "parallel": 1,
    "timeout": "5m",
    "steps": {
        "prepare": {
            "commands": [{"type": "primary", "inline": "create table if not exists runs (at timestamptz)"}]
        },
        "record": {
            "depends": ["prepare"],
            "commands": [
                {"type": "primary", "inline": "insert into runs values (now())"},
                {"inline": 'test -n "$PGQ_LOCK_REVISION" && echo "lock $PGQ_LOCK_REVISION"'},
            ],
        },
    },
    "checks": [
        {"type": "primary", "inline": "select count(*) > 0 as ran from runs", "expected": "{ran}={t}"}
    ],
}


def test_a_run_now_runs_the_job_in_a_pod_and_its_result_lands_in_status(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    spec = {
        "job": VACUUM,
        "connections": {"primary": connection(pg_cluster, database)},
        "lock": {"ttl": "30s"},
    }
    apply(cluster, pgqj("nightly", spec))
    obj = run_now(cluster, kubelet, "nightly")
    run = obj["status"]["lastRun"]
    assert run["result"] == "Succeeded" and run["exitCode"] == 0, (run, kubelet.logs)
    assert condition(obj, "LastRunSucceeded")["status"] == "True"
    with pg_cluster.primary.connect(dbname=database) as conn:
        assert conn.execute("select count(*) from runs").fetchall() == [(1,)]


def test_a_failing_check_fails_the_job_and_says_why_in_status(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    job = copy.deepcopy(VACUUM)
    job["checks"] = [{"type": "primary", "inline": "select 0 as ran", "expected": "{ran}={1}"}]
    apply(
        cluster, pgqj("checked", {"job": job, "connections": {"primary": connection(pg_cluster, database)}})
    )
    obj = run_now(cluster, kubelet, "checked")
    run = obj["status"]["lastRun"]
    assert run["result"] == "Failed" and run["exitCode"] == 1
    assert "{ran}={1}" in run.get("message", "")
    assert condition(obj, "LastRunSucceeded")["status"] == "False"
    assert condition(obj, "LastRunSucceeded")["reason"] == "ChecksFailed"


def test_a_role_mismatch_exits_3_and_is_not_retried(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    """The "standby" connection points at the primary: the runner refuses before running anything."""
    job = {"steps": {"analyze": {"commands": [{"type": "standby", "inline": "analyze"}]}}}
    spec = {"job": job, "connections": {"standby": connection(pg_cluster, database, role="standby")}}
    apply(cluster, pgqj("mismatch", spec))
    obj = run_now(cluster, kubelet, "mismatch")
    assert obj["status"]["lastRun"]["exitCode"] == 3
    assert condition(obj, "LastRunSucceeded")["reason"] == "RoleMismatch"
    pods = cluster.get("pods", "-n", NAMESPACE) or {}
    runs = [p for p in pods.get("items", []) if p["metadata"]["name"].startswith("pgqj-mismatch-now-")]
    assert len(runs) == 1  # the podFailurePolicy ends the Job at the first exit code 3


def test_a_missing_secret_waits_then_the_job_runs(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    late = connection(pg_cluster, database)
    late["passwordSecretRef"] = {"name": "pg-later", "key": "password"}
    apply(cluster, pgqj("patient", {"job": VACUUM, "connections": {"primary": late}}))
    cluster.eventually(
        lambda: condition(cluster.get("pgqj", "patient"), "Ready").get("reason") == "MissingReference",
        within=30,
    )
    cluster.kubectl(
        "apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-later", {"password": "x"})
    )
    obj = run_now(cluster, kubelet, "patient")
    assert obj["status"]["lastRun"]["result"] == "Succeeded", kubelet.logs


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "04-kubernetes"


def example(name: str) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def on_this_machine(obj: dict[str, Any], pg_cluster: PgCluster, database: str) -> dict[str, Any]:
    """An example resource with its connections pointed at the embedded servers: targets alternate
    between the primary and the standby, on the socket the pods share."""
    spec = obj["spec"]
    for connection_spec in spec["connections"].values():
        connection_spec["params"] = {
            "dbname": database,
            "user": "postgres",
            "host": str(pg_cluster.primary.socket_dir),
        }
    for index, target in enumerate(spec.get("targets", [])):
        target["connections"] = {
            name: {"port": "5432" if index % 2 == 0 else "5433"} for name in spec["connections"]
        }
    return obj


def test_every_node_in_turn_runs_one_pod_per_target_one_at_a_time(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    """examples/04's rolling checkpoint: three targets in an Indexed Job, serialised by the etcd lock.
    Each run holds an open range in a table with an exclusion constraint while it works, so two runs
    at once would make the second fail."""
    with pg_cluster.primary.connect(dbname=database) as conn:
        conn.execute("create table turns (during tstzrange not null, exclude using gist (during with &&))")
    obj = on_this_machine(example("every-node-in-turn.yaml"), pg_cluster, database)
    steps = obj["spec"]["job"]["steps"]
    ledger = connection(pg_cluster, database)
    obj["spec"]["connections"]["ledger"] = ledger
    steps["begin"] = {
        "commands": [
            {"type": "ledger", "inline": "insert into turns values (tstzrange(clock_timestamp(), null))"}
        ]
    }
    steps["checkpoint"]["depends"] = ["begin"]
    steps["checkpoint"]["commands"].append({"inline": "sleep 0.5"})
    steps["end"] = {
        "depends": ["checkpoint"],
        "commands": [
            {
                "type": "ledger",
                "inline": "update turns set during = tstzrange(lower(during), clock_timestamp())"
                " where upper_inf(during)",
            }
        ],
    }
    apply(cluster, obj)
    result = run_now(cluster, kubelet, "rolling-checkpoint")
    assert result["status"]["lastRun"]["result"] == "Succeeded", kubelet.logs
    with pg_cluster.primary.connect(dbname=database) as conn:
        turns = conn.execute("select lower(during), upper(during) from turns order by 1").fetchall()
    assert len(turns) == 3 and all(end is not None for _, end in turns)
    pods = (cluster.get("pods", "-n", NAMESPACE) or {}).get("items", [])
    indexes = sorted(
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        for p in pods
        if p["metadata"]["name"].startswith("pgqj-rolling-checkpoint-now-")
    )
    assert indexes == ["0", "1", "2"]


def test_all_at_once_runs_every_target_in_parallel_without_a_lock(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    cluster.kubectl(
        "apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-monitor", {"password": "x"})
    )
    obj = on_this_machine(example("all-at-once.yaml"), pg_cluster, database)
    assert "lock" not in obj["spec"]
    apply(cluster, obj)
    result = run_now(cluster, kubelet, "collect-stats")
    assert result["status"]["lastRun"]["result"] == "Succeeded", kubelet.logs


def test_one_node_runs_the_examples_vacuum_and_its_check_in_a_pod(
    cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster, database: str
) -> None:
    """examples/04's nightly vacuum, as written but for where the database is."""
    with pg_cluster.primary.connect(dbname=database) as conn:
        conn.execute("create table orders (id int); create table invoices (id int)")
    obj = on_this_machine(example("one-node.yaml"), pg_cluster, database)
    apply(cluster, obj)
    result = run_now(cluster, kubelet, "nightly-vacuum")
    run = result["status"]["lastRun"]
    assert run["result"] == "Succeeded" and run["exitCode"] == 0, kubelet.logs
    with pg_cluster.primary.connect(dbname=database) as conn:
        analyzed = conn.execute(
            "select count(*) from pg_stat_user_tables where relname in ('orders', 'invoices')"
            " and last_analyze is not null"
        ).fetchall()
    assert analyzed == [(2,)]
