"""examples/gitops: what Argo CD syncs. Applied with kubectl to the emulated API while the operator runs,
every PgQuartzJob becomes Ready, and applying the folder again changes nothing at all."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import yaml

from tests.support.kube import OperatorCluster, operator_cluster, secret_manifest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"


def _ready(obj: dict[str, Any] | None) -> bool:
    conditions = (obj or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _versions(cluster: OperatorCluster) -> dict[str, str]:
    found = {}
    for kind in ("pgqj", "configmaps", "cronjobs", "namespaces"):
        listing = cluster.get(kind, "-n", "databases") or {}
        for item in listing.get("items", []):
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


def test_the_applications_point_at_what_is_here() -> None:
    operator, jobs = (
        yaml.safe_load((GITOPS / "argocd" / name).read_text())
        for name in ("pgquartz-operator.yaml", "pgquartz-jobs.yaml")
    )
    assert (ROOT / operator["spec"]["source"]["path"] / "Chart.yaml").exists()
    assert (ROOT / jobs["spec"]["source"]["path"]).is_dir()
    waves = [int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for app in (operator, jobs)]
    assert waves[0] < waves[1]  # the CRD comes with the operator, before any PgQuartzJob


def test_the_jobs_folder_syncs_to_ready_and_resyncing_changes_nothing(tmp_path: pathlib.Path) -> None:
    environment = {"PGQUARTZ_ETCD_ENDPOINTS": "etcd-0.etcd.pgquartz-system:2379"}
    with operator_cluster(tmp_path, namespace="databases", environment=environment) as cluster:
        applied = cluster.kubectl("apply", "--validate=false", "-f", str(GITOPS / "jobs"))
        assert "namespace/databases created" in applied.stdout
        # The Secret is made outside Git; until then the jobs wait for it (MissingReference).
        cluster.kubectl(
            "apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-maint", {"password": "x"})
        )
        names = [
            obj["metadata"]["name"]
            for path in sorted((GITOPS / "jobs").glob("*.yaml"))
            for obj in [yaml.safe_load(path.read_text())]
            if obj["kind"] == "PgQuartzJob"
        ]
        assert names == ["nightly-vacuum", "weekly-reindex"]
        for name in names:
            cluster.eventually(lambda name=name: _ready(cluster.get("pgqj", name)), within=60)
        time.sleep(1.0)  # let the operator finish its bookkeeping
        before = _versions(cluster)
        again = cluster.kubectl("apply", "--validate=false", "-f", str(GITOPS / "jobs"))
        assert all(line.endswith("unchanged") for line in again.stdout.strip().splitlines()), again.stdout
        time.sleep(2.0)
        assert _versions(cluster) == before  # no drift, no write: by kubectl or by the operator
