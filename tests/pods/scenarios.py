"""The end-to-end scenarios, written once against a :class:`Platform` and run on two of them.

tests/pods runs them through the pod harness (podman, the emulated API, the embedded PostgreSQL and
etcd); tests/e2e runs the very same functions on a kind cluster where Docker and kind exist. A
scenario applies PgQuartzJobs with kubectl, asks for a run with ``pgquartz.io/run-now``, lets the
platform run the Job (the harness, or a real Job controller and kubelet), and checks status, pods
and rows in the database.
"""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Callable
from typing import Any, Protocol

import yaml

NAMESPACE = "databases"
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "04-kubernetes"


class Platform(Protocol):
    """Where the scenarios run: an API with the operator running, and pods that run Jobs."""

    def kubectl(self, *args: str, stdin: str | None = None) -> Any: ...

    def get(self, *what: str) -> dict[str, Any] | None: ...

    def eventually(self, check: Callable[[], Any], within: float = 20) -> Any: ...

    def run_jobs(self, owner: str) -> list[dict[str, Any]]:
        """Let the Jobs of the PgQuartzJob ``owner`` run to their end; return them."""
        ...

    def params(self, database: str, *, target: int = 0) -> dict[str, str]:
        """libpq parameters the pods reach the database with (odd targets: the standby, if any)."""
        ...

    def sql(self, database: str, statement: str) -> list[tuple[str, ...]]:
        """Rows of ``statement``, run on the primary, every value as text."""
        ...

    def secret(self, name: str) -> None: ...


def connection(platform: Platform, database: str, *, role: str = "primary") -> dict[str, Any]:
    return {
        "role": role,
        "params": platform.params(database),
        "passwordSecretRef": {"name": "pg-maint", "key": "password"},
    }


def pgqj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"schedule": "15 23 * * *", **spec},
    }


def apply(platform: Platform, obj: dict[str, Any]) -> None:
    platform.kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(obj))


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == kind), {})


def run_now(platform: Platform, name: str, value: str = "1") -> dict[str, Any]:
    """Wait for Ready, ask for a run, let the platform run its Job, return the resource once its status
    shows the run."""
    platform.eventually(
        lambda: condition(platform.get("pgqj", "-n", NAMESPACE, name), "Ready").get("status") == "True",
        within=60,
    )
    platform.kubectl("annotate", "-n", NAMESPACE, "pgqj", name, f"pgquartz.io/run-now={value}", "--overwrite")
    [job] = platform.run_jobs(name)
    job_name = job["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        obj = platform.get("pgqj", "-n", NAMESPACE, name)
        last = (obj or {}).get("status", {}).get("lastRun") or {}
        return obj if last.get("job") == job_name and last.get("result") else None

    found: dict[str, Any] = platform.eventually(finished, within=60)
    return found


def example(name: str, platform: Platform, database: str) -> dict[str, Any]:
    """An examples/04 resource as written, but for where the database is: targets alternate between
    the platform's servers."""
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    spec = obj["spec"]
    for connection_spec in spec["connections"].values():
        connection_spec["params"] = platform.params(database)
    for index, target in enumerate(spec.get("targets", [])):
        target["connections"] = {
            name: platform.params(database, target=index) for name in spec["connections"]
        }
    return obj


def pods_of(platform: Platform, prefix: str) -> list[dict[str, Any]]:
    items = (platform.get("pods", "-n", NAMESPACE) or {}).get("items", [])
    return [pod for pod in items if pod["metadata"]["name"].startswith(prefix)]


RECORD = {
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


def a_run_now_under_the_lock_succeeds_and_lands_in_status(platform: Platform, database: str) -> None:
    spec = {"job": RECORD, "connections": {"primary": connection(platform, database)}, "lock": {"ttl": "30s"}}
    apply(platform, pgqj("nightly", spec))
    obj = run_now(platform, "nightly")
    run = obj["status"]["lastRun"]
    assert run["result"] == "Succeeded" and run["exitCode"] == 0, run
    assert condition(obj, "LastRunSucceeded")["status"] == "True"
    assert platform.sql(database, "select count(*) from runs") == [("1",)]


def a_failing_check_fails_the_job_and_says_why_in_status(platform: Platform, database: str) -> None:
    job = copy.deepcopy(RECORD)
    job["checks"] = [{"type": "primary", "inline": "select 0 as ran", "expected": "{ran}={1}"}]
    apply(platform, pgqj("checked", {"job": job, "connections": {"primary": connection(platform, database)}}))
    run = run_now(platform, "checked")
    last = run["status"]["lastRun"]
    assert last["result"] == "Failed" and last["exitCode"] == 1 and "{ran}={1}" in last.get("message", "")
    assert condition(run, "LastRunSucceeded")["status"] == "False"
    assert condition(run, "LastRunSucceeded")["reason"] == "ChecksFailed"


def a_role_mismatch_exits_3_and_is_not_retried(platform: Platform, database: str) -> None:
    """The "standby" connection points at the primary: the runner refuses before running anything."""
    job = {"steps": {"analyze": {"commands": [{"type": "standby", "inline": "analyze"}]}}}
    spec = {"job": job, "connections": {"standby": connection(platform, database, role="standby")}}
    apply(platform, pgqj("mismatch", spec))
    obj = run_now(platform, "mismatch")
    assert obj["status"]["lastRun"]["exitCode"] == 3
    assert condition(obj, "LastRunSucceeded")["reason"] == "RoleMismatch"
    assert len(pods_of(platform, "pgqj-mismatch-now-")) == 1  # podFailurePolicy: no retry of exit code 3


def a_missing_secret_is_waited_for_then_the_job_runs(platform: Platform, database: str) -> None:
    late = connection(platform, database)
    late["passwordSecretRef"] = {"name": "pg-later", "key": "password"}
    apply(platform, pgqj("patient", {"job": RECORD, "connections": {"primary": late}}))
    platform.eventually(
        lambda: (
            condition(platform.get("pgqj", "-n", NAMESPACE, "patient"), "Ready").get("reason")
            == "MissingReference"
        ),
        within=60,
    )
    platform.secret("pg-later")
    assert run_now(platform, "patient")["status"]["lastRun"]["result"] == "Succeeded"


def one_node_runs_the_examples_vacuum_and_its_check(platform: Platform, database: str) -> None:
    """examples/04's nightly vacuum, as written but for where the database is."""
    platform.sql(database, "create table orders (id int); create table invoices (id int)")
    apply(platform, example("one-node.yaml", platform, database))
    run = run_now(platform, "nightly-vacuum")["status"]["lastRun"]
    assert run["result"] == "Succeeded" and run["exitCode"] == 0, run
    analyzed = platform.sql(
        database,
        "select count(*) from pg_stat_user_tables where relname in ('orders', 'invoices')"
        " and last_analyze is not null",
    )
    assert analyzed == [("2",)]


def every_node_in_turn_runs_one_pod_per_target_one_at_a_time(platform: Platform, database: str) -> None:
    """examples/04's rolling checkpoint: three targets in an Indexed Job, serialised by the etcd lock.
    Each run holds an open range in a table with an exclusion constraint while it works, so two runs
    at once would make the second fail."""
    platform.sql(
        database, "create table turns (during tstzrange not null, exclude using gist (during with &&))"
    )
    obj = example("every-node-in-turn.yaml", platform, database)
    steps = obj["spec"]["job"]["steps"]
    obj["spec"]["connections"]["ledger"] = connection(platform, database)
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
    apply(platform, obj)
    assert run_now(platform, "rolling-checkpoint")["status"]["lastRun"]["result"] == "Succeeded"
    assert platform.sql(database, "select count(*) from turns where not upper_inf(during)") == [("3",)]
    indexes = sorted(
        pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        for pod in pods_of(platform, "pgqj-rolling-checkpoint-now-")
    )
    assert indexes == ["0", "1", "2"]


def all_at_once_runs_every_target_in_parallel_without_a_lock(platform: Platform, database: str) -> None:
    platform.secret("pg-monitor")
    obj = example("all-at-once.yaml", platform, database)
    assert "lock" not in obj["spec"]
    apply(platform, obj)
    assert run_now(platform, "collect-stats")["status"]["lastRun"]["result"] == "Succeeded"


ALL = [
    a_run_now_under_the_lock_succeeds_and_lands_in_status,
    a_failing_check_fails_the_job_and_says_why_in_status,
    a_role_mismatch_exits_3_and_is_not_retried,
    a_missing_secret_is_waited_for_then_the_job_runs,
    one_node_runs_the_examples_vacuum_and_its_check,
    every_node_in_turn_runs_one_pod_per_target_one_at_a_time,
    all_at_once_runs_every_target_in_parallel_without_a_lock,
]
