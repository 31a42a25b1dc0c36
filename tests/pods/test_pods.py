"""The whole path with real images and real processes: PgQuartzJob → CronJob → Job → pod → runner → status.

The operator runs as its own process against the emulated API; tests/support/kubelet.py plays the
Job controller and the kubelet, running each pod's container with podman (the runner image built from
images/runner) as its spec says, against the embedded PostgreSQL primary and standby and etcd. The
scenarios (tests/pods/scenarios.py) are the ones tests/e2e runs on a real cluster.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pods import scenarios
from tests.support import images
from tests.support.etcdcluster import EtcdCluster
from tests.support.kube import OperatorCluster, operator_cluster, secret_manifest
from tests.support.kubelet import Kubelet
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.skipif(bool(images.MISSING), reason=images.WHY_NOT)


class HarnessPlatform:
    """The emulated API with the operator process, and the pod harness running Jobs with podman."""

    def __init__(self, cluster: OperatorCluster, kubelet: Kubelet, pg_cluster: PgCluster) -> None:
        self.cluster, self.kubelet, self.pg_cluster = cluster, kubelet, pg_cluster

    def kubectl(self, *args: str, stdin: str | None = None) -> Any:
        return self.cluster.kubectl(*args, stdin=stdin)

    def get(self, *what: str) -> dict[str, Any] | None:
        return self.cluster.get(*what)

    def eventually(self, check: Callable[[], Any], within: float = 20) -> Any:
        return self.cluster.eventually(check, within=within)

    def run_jobs(self, owner: str) -> list[dict[str, Any]]:
        self.eventually(self.kubelet.unfinished_jobs, within=30)
        return self.kubelet.run_pending()

    def params(self, database: str, *, target: int = 0) -> dict[str, str]:
        port = str(self.pg_cluster.standby.port if target % 2 else self.pg_cluster.primary.port)
        host = str(self.pg_cluster.primary.socket_dir)  # the pods share the servers' socket directory
        return {"host": host, "port": port, "user": "postgres", "dbname": database}

    def sql(self, database: str, statement: str) -> list[tuple[str, ...]]:
        with self.pg_cluster.primary.connect(dbname=database) as conn:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description is not None else []
        return [tuple(str(value) for value in row) for row in rows]

    def secret(self, name: str) -> None:
        self.kubectl("apply", "--validate=false", "-n", scenarios.NAMESPACE, "-f", "-",
                     stdin=secret_manifest(name, {"password": "x"}))  # fmt: skip


@pytest.fixture(scope="module")
def runner_image() -> str:
    return images.built()["runner"]


@pytest.fixture
def platform(
    tmp_path: pathlib.Path, etcd: EtcdCluster, pg_cluster: PgCluster, runner_image: str
) -> Iterator[HarnessPlatform]:
    environment = {"PGQUARTZ_ETCD_ENDPOINTS": ",".join(etcd.endpoints), "PGQUARTZ_RECHECK_SECONDS": "1"}
    with operator_cluster(tmp_path, namespace=scenarios.NAMESPACE, environment=environment) as cluster:
        url = json.loads(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        socket_dir = str(pg_cluster.primary.socket_dir)
        kubelet = Kubelet(url, scenarios.NAMESPACE, mounts=[(socket_dir, socket_dir)])
        running = HarnessPlatform(cluster, kubelet, pg_cluster)
        running.secret("pg-maint")
        try:
            yield running
        finally:
            shutil.rmtree(kubelet.scratch, ignore_errors=True)  # the pods' ConfigMap files


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda scenario: scenario.__name__)
def test_through_real_pods(
    platform: HarnessPlatform, database: str, scenario: Callable[[scenarios.Platform, str], None]
) -> None:
    try:
        scenario(platform, database)
    except AssertionError:
        print("pod logs:", json.dumps(platform.kubelet.logs, indent=1)[-6000:])
        raise
