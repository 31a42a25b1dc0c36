"""The Helm chart, installed by the real Helm engine into the emulated API: defaults, values, upgrades,
refusals, objects valid for every supported Kubernetes minor, and an operator run as it says."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pgquartz.operator import settings
from pgquartz.runner import __version__
from tests.support import helm
from tests.support.apiserver import schemas
from tests.support.kube import KUBECTL, OperatorCluster, emulator_process, secret_manifest, write_kubeconfig
from tests.support.processes import free_port, stop

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(helm.engine() is None, reason=helm.WHY_NOT)


class Api:
    def __init__(self, url: str, kubeconfig: pathlib.Path) -> None:
        self.url, self.kubeconfig = url, kubeconfig

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + path) as response:
                data: dict[str, Any] = json.load(response)
                return data
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def install(self, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        [release] = helm.helm(
            [{"action": "install", "release": "pgquartz", "values": values}], kubeconfig=self.kubeconfig
        )
        return helm.manifest_objects(release)

    def deployment(self) -> dict[str, Any]:
        found = self.get(f"/apis/apps/v1/namespaces/{helm.NAMESPACE}/deployments/pgquartz")
        assert found is not None, "no Deployment"
        return found


@pytest.fixture
def api(tmp_path: pathlib.Path) -> Iterator[Api]:
    with emulator_process() as (_, url):
        yield Api(url, write_kubeconfig(url, tmp_path / "kubeconfig", namespace=helm.NAMESPACE))


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)


def test_the_charts_crd_is_the_generated_one() -> None:
    assert (helm.CHART / "crds" / "pgquartzjobs.pgquartz.io.yaml").read_bytes() == (
        ROOT / "crds" / "pgquartzjobs.pgquartz.io.yaml"
    ).read_bytes()


def test_the_chart_follows_the_package_version() -> None:
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__


def test_a_default_install_makes_one_operator_its_rbac_and_the_crd(api: Api) -> None:
    objects = api.install()
    assert kinds(objects) == [
        ("ClusterRole", "pgquartz"),
        ("ClusterRole", "pgquartz-edit"),
        ("ClusterRole", "pgquartz-view"),
        ("ClusterRoleBinding", "pgquartz"),
        ("Deployment", "pgquartz"),
        ("Service", "pgquartz-metrics"),
        ("ServiceAccount", "pgquartz"),
    ]
    assert api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/pgquartzjobs.pgquartz.io")
    deployment = api.deployment()
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == f"pgquartz/operator:{__version__}"
    assert env_of(deployment)["PGQUARTZ_RUNNER_IMAGE"] == f"pgquartz/runner:{__version__}"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health", "scheme": "HTTP"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    view = next(obj for obj in objects if obj["metadata"]["name"] == "pgquartz-view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"


VALUES = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "monitored": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "no-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"}},
    "open": {
        "etcd": {"endpoints": ["etcd-0.etcd:2379", "etcd-1.etcd:2379"]},
        "policy": {
            "allowedImages": ["registry.example/dba/"],
            "allowTolerations": True,
            "deniedAnnotations": [],
            "allowCrossNamespaceLocks": True,
            "allowCrossNamespaceClusters": True,
        },
        "image": {"repository": "registry.example/pgquartz/operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "dba"},
    },
}


@pytest.mark.parametrize("case", sorted(VALUES))
def test_every_rendered_object_is_valid_for_every_supported_minor(api: Api, case: str) -> None:
    objects = api.install(VALUES[case])
    checked = 0
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            assert obj["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
            continue  # Prometheus operator's CRD, not a Kubernetes schema
        for minor in schemas.SUPPORTED_MINORS:
            kubernetes_validate.validate(obj, minor, strict=True)
        checked += 1
    assert checked >= 2


def test_a_namespaced_install_gets_roles_in_those_namespaces_only(api: Api) -> None:
    objects = api.install(VALUES["namespaced"])
    assert ("ClusterRole", "pgquartz") not in kinds(objects)
    roles = sorted(obj["metadata"]["namespace"] for obj in objects if obj["kind"] == "Role")
    bindings = sorted(obj["metadata"]["namespace"] for obj in objects if obj["kind"] == "RoleBinding")
    assert roles == bindings == ["team-a", "team-b"]
    assert api.get("/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/pgquartz")
    assert env_of(api.deployment())["PGQUARTZ_NAMESPACES"] == "team-a,team-b"


def test_the_operator_reads_the_database_operators_clusters_unless_told_not_to(api: Api) -> None:
    def cluster_kinds(objects: list[dict[str, Any]]) -> list[str]:
        [role] = [
            obj
            for obj in objects
            if obj["kind"] in ("ClusterRole", "Role") and obj["metadata"]["name"] == "pgquartz"
        ]
        return sorted(
            f"{group}/{resource}"
            for rule in role["rules"]
            if rule["verbs"] == ["get", "list", "watch"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            if group.endswith((".cnpg.io", ".zalan.do", ".crunchydata.com"))
        )

    assert cluster_kinds(api.install()) == [
        "acid.zalan.do/postgresqls",
        "postgres-operator.crunchydata.com/postgresclusters",
        "postgresql.cnpg.io/clusters",
    ]
    assert cluster_kinds(api.install({"clusterDiscovery": {"enabled": False}})) == []


def test_values_become_the_operators_settings(api: Api) -> None:
    api.install(VALUES["open"])
    env = env_of(api.deployment())
    assert env["PGQUARTZ_ETCD_ENDPOINTS"] == "etcd-0.etcd:2379,etcd-1.etcd:2379"
    assert env["PGQUARTZ_ALLOWED_IMAGES"] == "registry.example/dba/"
    assert env["PGQUARTZ_ALLOW_TOLERATIONS"] == "true" and env["PGQUARTZ_ALLOW_SERVICE_ACCOUNTS"] == "false"
    assert env["PGQUARTZ_DENIED_ANNOTATIONS"] == "" and env["PGQUARTZ_ALLOW_CROSS_NAMESPACE_LOCKS"] == "true"
    assert env["PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS"] == "true"
    parsed = settings.from_environment(env)
    assert parsed.defaults.policy.allow_tolerations and parsed.defaults.policy.denied_annotations == ()


def test_an_upgrade_with_changed_values_changes_the_deployment(api: Api) -> None:
    first = {"action": "install", "release": "pgquartz"}
    second = {"action": "upgrade", "release": "pgquartz", "values": {"etcd": {"endpoints": ["etcd:2379"]}}}
    _, upgraded = helm.helm([first, second], kubeconfig=api.kubeconfig)
    assert upgraded["version"] == 2
    assert env_of(api.deployment())["PGQUARTZ_ETCD_ENDPOINTS"] == "etcd:2379"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"logFormat": "xml"}, "logFormat"),
        ({"maxInstances": 0}, "maxInstances"),
        ({"replicas": 3}, "replicas"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"etcd": {"endpoints": ["no port"]}}, "endpoints"),
    ],
)
def test_bad_values_are_refused_before_anything_is_installed(
    api: Api, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmError, match=complaint):
        api.install(values)
    assert api.get(f"/apis/apps/v1/namespaces/{helm.NAMESPACE}/deployments/pgquartz") is None


def test_the_operator_run_as_the_deployment_says_reconciles_a_pgquartzjob(
    api: Api, tmp_path: pathlib.Path
) -> None:
    ports = {"health": free_port(), "metrics": free_port()}
    api.install({"ports": ports, "etcd": {"endpoints": ["etcd.pgquartz:2379"]}})
    [container] = api.deployment()["spec"]["template"]["spec"]["containers"]
    environment = {item["name"]: item["value"] for item in container["env"]}
    command = [str(KUBECTL.with_name(container["command"][0])), *container.get("args", [])]
    with (tmp_path / "operator.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **environment, "KUBECONFIG": str(api.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    cluster = OperatorCluster(
        api.kubeconfig, process, {"liveness": ports["health"], "metrics": ports["metrics"]}
    )
    try:
        cluster.kubectl(
            "apply",
            "--validate=false",
            "-n",
            "databases",
            "-f",
            "-",
            stdin=secret_manifest("pg-maint", {"password": "x"}),
        )
        cluster.kubectl(
            "apply", "--validate=false", "-f", str(ROOT / "examples" / "04-kubernetes" / "one-node.yaml")
        )

        def ready() -> bool:
            obj = cluster.get("pgqj", "-n", "databases", "nightly-vacuum") or {}
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        cluster.eventually(ready, within=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['health']}/healthz") as response:
            assert response.status == 200
    finally:
        stop(process, grace=20)
    assert process.returncode == 0, (tmp_path / "operator.log").read_text()[-2000:]


def test_the_plain_bundle_is_the_chart_rendered_with_its_defaults(api: Api) -> None:
    assert helm.BUNDLE.read_text() == helm.bundle_text(api.kubeconfig), "run: python -m tests.support.helm"
    documents = [doc for doc in yaml.safe_load_all(helm.BUNDLE.read_text()) if doc]
    assert documents[0]["kind"] == "Namespace" and documents[1]["kind"] == "CustomResourceDefinition"
