"""The operator against the emulated API: create → objects, update → they follow, no churn, bad input."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf
import kubernetes.client
import pytest
import yaml

from pgquartz.operator import bookkeeping, children, handlers, kubeapi, manifests, validation
from pgquartz.operator import metrics as operator_metrics
from tests.operator.test_crd import VALID_SPEC
from tests.support.kube import Emulator, register_pgquartz, running_emulator, running_kopf

JOBS = "/apis/pgquartz.io/v1alpha1/namespaces/db/pgquartzjobs"
SECRETS = "/api/v1/namespaces/db/secrets"
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "pg-maint", "namespace": "db"},
    "data": {"password": "c2VjcmV0"},
}
DEFAULTS = manifests.Defaults(image="pgquartz/runner:test", etcd_endpoints=("etcd:2379",))


class Cluster:
    def __init__(
        self, emulator: Emulator, url: str, session: aiohttp.ClientSession, metrics: operator_metrics.Metrics
    ) -> None:
        self.emulator, self.url, self.session, self.metrics = emulator, url, session, metrics

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.url + path, json=body) as response:
            assert response.status < 300, await response.text()
            return dict(await response.json())

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(self.url + path, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()
            return dict(await response.json())

    async def get(self, path: str) -> dict[str, Any] | None:
        async with self.session.get(self.url + path) as response:
            return None if response.status == 404 else dict(await response.json())

    async def eventually(
        self, path: str, check: Callable[[dict[str, Any]], bool], within: float = 10
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            obj = await self.get(path)
            if obj is not None and check(obj):
                return obj
            assert asyncio.get_running_loop().time() < deadline, f"{path}: never as expected: {obj}"
            await asyncio.sleep(0.05)

    def writes(self, fragment: str) -> int:
        return sum(
            1
            for request in self.emulator.history
            if request.method in ("POST", "PUT", "PATCH") and fragment in str(request.url)
        )

    async def writes_during_scheduled_runs(self, runs: int) -> list[str]:
        """The operator's writes while the CronJob controller records ``runs`` scheduled runs."""
        await asyncio.sleep(1.0)  # let kopf finish its own bookkeeping first
        before = len(self.operator_writes())
        for minute in range(runs):
            status = {"status": {"lastScheduleTime": f"2026-11-23T23:{minute:02}:00Z"}}
            await self.patch("/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly/status", status)
        await asyncio.sleep(1.5)
        return self.operator_writes()[before:]

    def operator_writes(self) -> list[str]:
        """Writes by the operator (its client and kopf), not by the test's own session."""
        return [
            f"{request.method} {request.url.path}"
            for request in self.emulator.history
            if request.method in ("POST", "PUT", "PATCH", "DELETE")
            and not str(request.headers.get("User-Agent", "")).startswith("Python/")
        ]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    registry = kopf.OperatorRegistry()
    async with running_emulator() as (emulator, url):
        register_pgquartz(emulator)
        shared = kubeapi.KubernetesStore(kubernetes.client.Configuration(host=url))  # one per process
        metrics = operator_metrics.create()
        handlers.register(
            registry,
            store=lambda: shared,
            defaults=DEFAULTS,
            metrics=metrics,
            recheck_interval=0.5,
        )
        async with running_kopf(registry, url), aiohttp.ClientSession() as session:
            cluster = Cluster(emulator, url, session, metrics)
            await cluster.post(SECRETS, SECRET)  # what VALID_SPEC's connection refers to
            await asyncio.sleep(0.5)
            yield cluster
        shared.close()


def pgqj(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "metadata": {"name": name, "namespace": "db"},
        "spec": copy.deepcopy(spec or VALID_SPEC),
    }


def ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)


async def test_creating_a_pgquartzjob_makes_its_config_map_and_cron_job(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    config_map = await cluster.eventually("/api/v1/namespaces/db/configmaps/pgqj-nightly", lambda o: True)
    cron_job = await cluster.eventually("/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly", lambda o: True)
    job_file = yaml.safe_load(config_map["data"]["nightly.yml"])
    assert job_file["etcdConfig"]["lockKey"] == "db/nightly"
    assert cron_job["spec"]["schedule"] == "15 23 * * *"
    assert cron_job["metadata"]["ownerReferences"][0]["kind"] == "PgQuartzJob"
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    assert obj["status"]["observedGeneration"] == 1
    assert ready(obj)["reason"] == "ObjectsInPlace"  # type: ignore[index]
    events = await cluster.eventually(
        "/api/v1/namespaces/db/events",
        lambda listing: any(e.get("reason") == "Created" for e in listing.get("items", [])),
    )
    await asyncio.sleep(0.3)  # nothing more follows
    events = await cluster.get("/api/v1/namespaces/db/events") or {}
    created = [e for e in events["items"] if e.get("reason") == "Created"]
    assert [(e["involvedObject"]["name"], e["message"]) for e in created] == [
        ("nightly", "ConfigMap and CronJob pgqj-nightly created")
    ]


async def test_a_reconciliation_writes_the_resource_once_its_status(cluster: Cluster) -> None:
    """kopf's bookkeeping rides in the status write with the conditions: no second patch of the
    resource (and no second watch event to process) for kopf alone."""
    await cluster.post(JOBS, pgqj("nightly"))
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    await asyncio.sleep(1.0)
    writes = [w for w in cluster.operator_writes() if "/pgquartzjobs/" in w]
    assert writes == [f"method.PATCH {JOBS}/nightly/status"]
    assert obj["status"]["bookkeeping"]["handledSpec"] == bookkeeping.spec_digest(obj["spec"])
    assert not obj["metadata"].get("annotations")


async def test_the_annotation_earlier_versions_kept_is_still_read_then_removed(cluster: Cluster) -> None:
    old_spec = copy.deepcopy(VALID_SPEC)
    old_spec["schedule"] = "0 1 * * *"
    body = pgqj("nightly")
    legacy = {"pgquartz.io/last-handled-configuration": bookkeeping.spec_digest(old_spec)}
    body["metadata"]["annotations"] = legacy
    await cluster.post(JOBS, body)  # handled before, as old_spec: this spec is a change
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    assert obj["status"]["bookkeeping"]["handledSpec"] == bookkeeping.spec_digest(obj["spec"])
    obj = await cluster.eventually(
        f"{JOBS}/nightly",
        lambda o: "pgquartz.io/last-handled-configuration" not in (o["metadata"].get("annotations") or {}),
    )
    cron_job = await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly")
    assert cron_job is not None and cron_job["spec"]["schedule"] == VALID_SPEC["schedule"]


async def test_a_spec_change_updates_the_objects(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually("/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly", lambda o: True)
    await cluster.patch(f"{JOBS}/nightly", {"spec": {"schedule": "0 4 * * *", "suspend": True}})
    cron_job = await cluster.eventually(
        "/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly", lambda o: o["spec"]["schedule"] == "0 4 * * *"
    )
    assert cron_job["spec"]["suspend"] is True
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: o["status"].get("observedGeneration") == 2)
    assert obj["metadata"]["generation"] == 2
    assert ready(obj)["observedGeneration"] == 2  # type: ignore[index]


async def test_a_ready_resource_is_left_alone_no_hot_loop(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    await asyncio.sleep(1.0)  # let kopf finish its own bookkeeping
    before = cluster.writes("/")
    await asyncio.sleep(2.0)
    assert cluster.writes("/") == before  # no status, annotation, event or object writes


CRON_JOB = "/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly"
CONFIG_MAP = "/api/v1/namespaces/db/configmaps/pgqj-nightly"


async def test_a_deleted_cron_job_is_recreated(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    async with cluster.session.delete(cluster.url + CRON_JOB) as response:
        assert response.status < 300
    cron_job = await cluster.eventually(CRON_JOB, lambda o: True)
    assert cron_job["spec"]["schedule"] == "15 23 * * *"
    events = await cluster.eventually(
        "/api/v1/namespaces/db/events",
        lambda listing: any(e.get("reason") == "Restored" for e in listing.get("items", [])),
    )
    assert [e["message"] for e in events["items"] if e.get("reason") == "Restored"] == [
        "CronJob pgqj-nightly recreated"
    ]


async def test_a_hand_edited_cron_job_is_put_back(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    await cluster.patch(CRON_JOB, {"spec": {"schedule": "* * * * *", "suspend": True}})
    cron_job = await cluster.eventually(CRON_JOB, lambda o: o["spec"]["schedule"] == "15 23 * * *")
    assert cron_job["spec"]["suspend"] is False


async def test_a_deleted_config_map_is_back_by_the_next_scheduled_run(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    async with cluster.session.delete(cluster.url + CONFIG_MAP) as response:
        assert response.status < 300
    assert await cluster.get(CONFIG_MAP) is None
    # What the CronJob controller writes when it starts a run.
    await cluster.patch(f"{CRON_JOB}/status", {"status": {"lastScheduleTime": "2026-11-23T23:15:00Z"}})
    config_map = await cluster.eventually(CONFIG_MAP, lambda o: True)
    assert "nightly.yml" in config_map["data"]


async def test_annotation_changes_render_nothing_again(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    await asyncio.sleep(0.5)
    before = cluster.writes("/cronjobs") + cluster.writes("/configmaps")
    await cluster.patch(
        f"{JOBS}/nightly",
        {
            "metadata": {
                "annotations": {"argocd.argoproj.io/tracking-id": "app:pgquartz.io/PgQuartzJob:db/nightly"}
            }
        },
    )
    await asyncio.sleep(1.5)
    assert cluster.writes("/cronjobs") + cluster.writes("/configmaps") == before


async def test_an_inline_password_never_gets_past_the_api_server(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["params"]["password"] = "inline"  # refused: use a Secret
    async with cluster.session.post(cluster.url + JOBS, json=pgqj("broken", spec)) as response:
        assert response.status == 422
        assert "passwords go in a Secret" in (await response.json())["message"]
    assert await cluster.get(f"{JOBS}/broken") is None


async def test_an_invalid_spec_is_reported_not_half_applied(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["targets"] = [{"name": "node-a", "connections": {"replica": {"host": "pg-a"}}}]  # no such connection
    await cluster.post(JOBS, pgqj("broken", spec))
    obj = await cluster.eventually(f"{JOBS}/broken", lambda o: ready(o) is not None)
    condition = ready(obj)
    assert condition is not None and condition["status"] == "False" and condition["reason"] == "InvalidSpec"
    assert "no connection named 'replica'" in condition["message"]
    assert await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-broken") is None
    assert await cluster.get("/api/v1/namespaces/db/configmaps/pgqj-broken") is None
    assert obj["spec"]["targets"] == spec["targets"]  # the user's spec is never edited


async def refused(cluster: Cluster, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Post a resource the operator must refuse; its Ready condition, once nothing was written."""
    await cluster.post(JOBS, pgqj(name, spec))
    obj = await cluster.eventually(f"{JOBS}/{name}", lambda o: ready(o) is not None)
    assert await cluster.get(f"/apis/batch/v1/namespaces/db/cronjobs/pgqj-{name}") is None
    assert await cluster.get(f"/api/v1/namespaces/db/configmaps/pgqj-{name}") is None
    condition = ready(obj)
    assert condition is not None and condition["status"] == "False"
    events = await cluster.eventually(
        "/api/v1/namespaces/db/events",
        lambda listing: any(e.get("reason") == condition["reason"] for e in listing.get("items", [])),
    )
    [event] = [e for e in events["items"] if e["involvedObject"]["name"] == name]
    assert event["type"] == "Warning" and event["message"] == condition["message"]
    return condition


async def test_a_schedule_the_api_server_would_refuse_is_reported_as_invalid_schedule(
    cluster: Cluster,
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["schedule"] = "61 23 * * *"
    condition = await refused(cluster, "late", spec)
    assert condition["reason"] == "InvalidSchedule"
    assert condition["message"] == "schedule: minute field: '61' is above 59 (allowed 0-59)"


async def test_an_unknown_time_zone_is_reported_as_invalid_schedule(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["timeZone"] = "Europe/Atlantis"
    condition = await refused(cluster, "sunken", spec)
    assert condition["reason"] == "InvalidSchedule"
    assert "unknown time zone 'Europe/Atlantis'" in condition["message"]


async def test_job_problems_only_the_planner_sees_are_reported_against_the_users_fields(
    cluster: Cluster,
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["analyze"] = {
        "depends": ["vacum"],
        "commands": [{"type": "replica", "inline": "analyze"}],
    }
    condition = await refused(cluster, "typo", spec)
    assert condition["reason"] == "InvalidJob"
    assert condition["message"] == (
        "spec.job.steps.analyze.depends[0]: unknown step 'vacum' (did you mean 'vacuum'?); "
        "spec.job.steps.analyze.commands[0].type: type 'replica' is neither 'shell' nor a connection"
        " (connections: 'primary')"
    )


async def test_a_lock_without_endpoints_anywhere_is_refused(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["lock"] = {"ttl": "1m"}  # and this fixture's operator has default endpoints...
    await cluster.post(JOBS, pgqj("locked", spec))
    await cluster.eventually(f"{JOBS}/locked", lambda o: (ready(o) or {}).get("status") == "True")
    assert validation_problems(spec, manifests.Defaults()) == [  # ...one without them refuses it
        "spec.lock.endpoints: must not be empty"
    ]


def validation_problems(spec: dict[str, Any], defaults: manifests.Defaults) -> list[str]:
    obj = pgqj("x", spec)
    obj["metadata"]["uid"] = "uid"
    return validation.job_file_problems(manifests.render(obj, defaults=defaults).config_map)


async def test_a_connection_to_a_missing_cloudnativepg_cluster_is_reported_until_it_exists(
    cluster: Cluster,
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"] = {
        "role": "primary",
        "cluster": {"kind": "CloudNativePG", "name": "main"},
        "params": {"dbname": "app"},
    }
    await cluster.post(JOBS, pgqj("on-main", spec))
    obj = await cluster.eventually(f"{JOBS}/on-main", lambda o: ready(o) is not None)
    condition = ready(obj)
    assert condition is not None and (condition["status"], condition["reason"]) == (
        "False",
        "MissingReference",
    )
    assert "CloudNativePG cluster 'main' not found in namespace db" in condition["message"]
    assert "Secret 'main-app' (key 'password') not found" in condition["message"]
    config_map = await cluster.get("/api/v1/namespaces/db/configmaps/pgqj-on-main")
    assert config_map is not None
    job_file = yaml.safe_load(config_map["data"]["on-main.yml"])
    assert job_file["connections"]["primary"]["conn_params"] == {
        "dbname": "app",
        "host": "main-rw.db.svc",
        "port": "5432",
        "user": "app",
    }
    await cluster.post(
        "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters",
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "main", "namespace": "db"},
            "spec": {"instances": 3, "storage": {"size": "1Gi"}},
        },
    )
    app = copy.deepcopy(SECRET)
    app["metadata"]["name"] = "main-app"
    app["type"] = "kubernetes.io/basic-auth"
    app["data"] = {"username": "YXBw", "password": "c2VjcmV0"}
    await cluster.post(SECRETS, app)
    await cluster.eventually(f"{JOBS}/on-main", lambda o: (ready(o) or {}).get("status") == "True")
    cron_job = await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-on-main")
    assert cron_job is not None
    [container] = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    [password] = [env for env in container["env"] if env["name"] == "PGQ_PASSWORD_PRIMARY"]
    assert password["valueFrom"] == {"secretKeyRef": {"name": "main-app", "key": "password"}}


PODS = "/api/v1/namespaces/db/pods"


async def start_instance(cluster: Cluster, name: str, role: str, ip: str) -> None:
    """An instance pod as CloudNativePG labels it, with the address the kubelet reports."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "db",
            "labels": {"cnpg.io/cluster": "main", "cnpg.io/instanceRole": role},
        },
        "spec": {"containers": [{"name": "postgres", "image": "ghcr.io/cloudnative-pg/postgresql:17"}]},
    }
    await cluster.post(PODS, pod)
    await cluster.patch(f"{PODS}/{name}/status", {"status": {"phase": "Running", "podIP": ip}})


async def delete(cluster: Cluster, path: str) -> None:
    async with cluster.session.delete(cluster.url + path) as response:
        assert response.status < 300, await response.text()


def target_hosts(config_map: dict[str, Any]) -> list[str]:
    files = sorted(key for key in config_map["data"] if key.endswith(".conn"))
    return [yaml.safe_load(config_map["data"][key])["primary"]["host"] for key in files]


async def test_targets_from_a_cluster_follow_its_instances_as_they_come_and_go(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"] = {
        "primary": {
            "role": "all",
            "cluster": {"kind": "CloudNativePG", "name": "main"},
            "params": {"dbname": "app"},
        }
    }
    spec["targetsFrom"] = {"cluster": {"kind": "CloudNativePG", "name": "main"}}
    spec["lock"] = {}
    config_maps = "/api/v1/namespaces/db/configmaps/pgqj-instances"
    await cluster.post(JOBS, pgqj("instances", spec))
    waiting = await cluster.eventually(f"{JOBS}/instances", lambda o: ready(o) is not None)
    assert (ready(waiting) or {}).get("reason") == "MissingReference"
    assert "no all instances of CloudNativePG cluster 'main'" in (ready(waiting) or {})["message"]
    assert await cluster.get(config_maps) is None  # nothing to run against yet
    await start_instance(cluster, "main-2", "replica", "10.0.0.12")
    await start_instance(cluster, "main-1", "primary", "10.0.0.11")
    app = copy.deepcopy(SECRET)
    app["metadata"]["name"] = "main-app"
    app["data"] = {"password": "c2VjcmV0"}
    await cluster.post(SECRETS, app)
    await cluster.post(
        "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters",
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "main", "namespace": "db"},
        },
    )
    obj = await cluster.eventually(f"{JOBS}/instances", lambda o: (ready(o) or {}).get("status") == "True")
    assert obj["status"]["targets"] == ["main-1", "main-2"]  # by name, whatever order they came in
    config_map = await cluster.eventually(config_maps, lambda o: len(target_hosts(o)) == 2)
    assert target_hosts(config_map) == ["10.0.0.11", "10.0.0.12"]
    cron_job = await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-instances")
    assert cron_job is not None and cron_job["spec"]["jobTemplate"]["spec"]["completions"] == 2

    await start_instance(cluster, "main-3", "replica", "10.0.0.13")  # scale out
    config_map = await cluster.eventually(config_maps, lambda o: len(target_hosts(o)) == 3)
    assert target_hosts(config_map) == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    await delete(cluster, f"{PODS}/main-2")  # replaced: the same name, another address
    await start_instance(cluster, "main-2", "replica", "10.0.0.22")
    config_map = await cluster.eventually(config_maps, lambda o: "10.0.0.22" in target_hosts(o))
    await delete(cluster, f"{PODS}/main-3")  # scale in
    config_map = await cluster.eventually(config_maps, lambda o: len(target_hosts(o)) == 2)
    assert target_hosts(config_map) == ["10.0.0.11", "10.0.0.22"]
    await cluster.eventually(
        f"{JOBS}/instances", lambda o: o["status"].get("targets") == ["main-1", "main-2"]
    )
    await asyncio.sleep(1.0)
    before = len(cluster.operator_writes())
    await asyncio.sleep(2.0)  # four rechecks of an unchanged cluster
    assert cluster.operator_writes()[before:] == []


async def test_a_missing_secret_is_reported_until_it_exists(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["passwordSecretRef"] = {"name": "pg-later", "key": "password"}
    await cluster.post(JOBS, pgqj("early", spec))
    obj = await cluster.eventually(f"{JOBS}/early", lambda o: ready(o) is not None)
    condition = ready(obj)
    assert condition is not None and condition["status"] == "False"
    assert condition["reason"] == "MissingReference"
    assert condition["message"] == (
        "Secret 'pg-later' (key 'password') not found in namespace db: runs fail until this is fixed"
    )
    # The objects are in place already, ready for when the Secret arrives (GitOps applies in any order).
    assert await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-early") is not None
    secret = copy.deepcopy(SECRET)
    secret["metadata"]["name"] = "pg-later"
    secret["data"] = {"passwd": "c2VjcmV0"}  # the wrong key first
    await cluster.post(SECRETS, secret)
    await asyncio.sleep(1.5)
    assert (ready(await cluster.get(f"{JOBS}/early") or {}) or {}).get("reason") == "MissingReference"
    await cluster.patch(f"{SECRETS}/pg-later", {"data": {"password": "c2VjcmV0"}})
    obj = await cluster.eventually(f"{JOBS}/early", lambda o: (ready(o) or {}).get("status") == "True")
    assert ready(obj)["reason"] == "ObjectsInPlace"  # type: ignore[index]
    warnings = [
        e
        for e in (await cluster.get("/api/v1/namespaces/db/events") or {}).get("items", [])
        if e["involvedObject"]["name"] == "early" and e["type"] == "Warning"
    ]
    assert len(warnings) == 1  # one event when it became unready, not one per recheck


async def test_a_missing_scripts_config_map_or_script_is_reported_until_it_exists(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["scripts"] = {"configMapRef": {"name": "maintenance-scripts"}}
    spec["job"]["steps"]["archive"] = {"commands": [{"file": "archive.sh"}]}
    await cluster.post(JOBS, pgqj("scripted", spec))
    obj = await cluster.eventually(f"{JOBS}/scripted", lambda o: ready(o) is not None)
    assert ready(obj)["message"] == (  # type: ignore[index]
        "ConfigMap 'maintenance-scripts' not found in namespace db: runs fail until this is fixed"
    )
    scripts = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "maintenance-scripts", "namespace": "db"},
        "data": {"vacuum.sh": "#!/bin/bash\n"},
    }
    await cluster.post("/api/v1/namespaces/db/configmaps", scripts)
    obj = await cluster.eventually(f"{JOBS}/scripted", lambda o: "archive.sh" in ready(o)["message"])  # type: ignore[index]
    assert ready(obj)["message"] == (  # type: ignore[index]
        "spec.job.steps.archive.commands[0].file: 'archive.sh' is not a key of ConfigMap"
        " 'maintenance-scripts': runs fail until this is fixed"
    )
    await cluster.patch(
        "/api/v1/namespaces/db/configmaps/maintenance-scripts", {"data": {"archive.sh": "#!/bin/bash\n"}}
    )
    await cluster.eventually(f"{JOBS}/scripted", lambda o: (ready(o) or {}).get("status") == "True")


async def jobs(cluster: Cluster) -> list[dict[str, Any]]:
    listing = await cluster.get("/apis/batch/v1/namespaces/db/jobs")
    return list((listing or {}).get("items", []))


async def test_run_now_starts_one_job_per_new_value_and_never_on_reapply(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    assert await jobs(cluster) == []
    await cluster.patch(
        f"{JOBS}/nightly", {"metadata": {"annotations": {"pgquartz.io/run-now": "2026-11-23T10:00"}}}
    )
    await cluster.eventually(
        f"{JOBS}/nightly", lambda o: o.get("status", {}).get("handledRunNow") == "2026-11-23T10:00"
    )
    [job] = await jobs(cluster)
    assert job["metadata"]["annotations"]["pgquartz.io/run-now"] == "2026-11-23T10:00"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][1] == "/etc/pgquartz/job/nightly.yml"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "PgQuartzJob"
    # Argo CD re-applying the same manifest: same value, no new Job.
    await cluster.patch(
        f"{JOBS}/nightly",
        {
            "metadata": {
                "labels": {"synced": "again"},
                "annotations": {"pgquartz.io/run-now": "2026-11-23T10:00"},
            }
        },
    )
    await asyncio.sleep(1.0)
    assert len(await jobs(cluster)) == 1
    await cluster.patch(f"{JOBS}/nightly", {"metadata": {"annotations": {"pgquartz.io/run-now": "second"}}})
    await cluster.eventually(
        f"{JOBS}/nightly", lambda o: o.get("status", {}).get("handledRunNow") == "second"
    )
    assert len(await jobs(cluster)) == 2


async def test_a_deleted_pgquartzjob_goes_away(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    async with cluster.session.delete(f"{cluster.url}{JOBS}/nightly") as response:
        assert response.status < 300
    for _ in range(100):
        if await cluster.get(f"{JOBS}/nightly") is None:
            break
        await asyncio.sleep(0.05)
    assert await cluster.get(f"{JOBS}/nightly") is None  # no finalizer left hanging


def scheduled_job(cron_job: dict[str, Any], name: str) -> dict[str, Any]:
    """The Job the CronJob controller makes from ``cron_job`` (getJobFromTemplate2)."""
    template = cron_job["spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cron_job["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cron_job["metadata"]["name"],
                    "uid": cron_job["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


async def test_finished_runs_show_in_status_and_events(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    # What the CronJob controller and kubelet would do: a Job, its pod, the runner's summary.
    cron_job = await cluster.get(CRON_JOB)
    assert cron_job is not None
    await cluster.post("/apis/batch/v1/namespaces/db/jobs", scheduled_job(cron_job, "pgqj-nightly-29390"))
    summary = {
        "job": "nightly",
        "result": "check-failed",
        "exitCode": 1,
        "failedSteps": ["vacuum"],
        "message": "check failed: statistics are fresh: expected text '{stale}={0}' not found",
    }
    await cluster.post(
        "/api/v1/namespaces/db/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "pgqj-nightly-29390-abcde",
                "namespace": "db",
                "labels": {"job-name": "pgqj-nightly-29390"},
            },
            "spec": {"containers": [{"name": "runner", "image": "x"}]},
        },
    )
    # Status goes through the status subresource, as the kubelet and the Job controller write it.
    await cluster.patch(
        "/api/v1/namespaces/db/pods/pgqj-nightly-29390-abcde/status",
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "x",
                        "imageID": "x",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 1, "message": json.dumps(summary)}},
                    }
                ]
            },
        },
    )
    await cluster.patch(
        "/apis/batch/v1/namespaces/db/jobs/pgqj-nightly-29390/status",
        {
            "status": {
                "startTime": "2026-11-23T23:15:00Z",
                "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}],
            }
        },
    )
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: "lastRun" in o.get("status", {}))
    run = obj["status"]["lastRun"]
    assert run["job"] == "pgqj-nightly-29390" and run["result"] == "Failed" and run["exitCode"] == 1
    assert run["failedSteps"] == ["vacuum"]
    condition = next(c for c in obj["status"]["conditions"] if c["type"] == "LastRunSucceeded")
    assert condition["status"] == "False" and condition["reason"] == "ChecksFailed"
    events = await cluster.eventually(
        "/api/v1/namespaces/db/events",
        lambda listing: any(e.get("reason") == "RunFailed" for e in listing.get("items", [])),
    )
    [failed] = [e for e in events["items"] if e.get("reason") == "RunFailed"]
    assert failed["type"] == "Warning" and "statistics are fresh" in failed["message"]
    runs = cluster.metrics.registry.get_sample_value(
        "pgquartz_runs_total", {"namespace": "db", "name": "nightly", "result": "Failed"}
    )
    assert runs == 1.0


async def test_controller_status_writes_cause_no_writes_and_no_events(cluster: Cluster) -> None:
    """Against an API that defaults every object, a Ready resource whose CronJob the controller
    updates at every run sees no writes at all: no false drift, no Restored events."""
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    assert await cluster.writes_during_scheduled_runs(20) == []
    cron_job = await cluster.get(CRON_JOB)
    assert cron_job is not None and cron_job["status"]["lastScheduleTime"] == "2026-11-23T23:19:00Z"


async def test_a_hand_edit_of_an_owned_field_is_put_back_and_others_fields_are_kept(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    edit = {"spec": {"successfulJobsHistoryLimit": 10, "startingDeadlineSeconds": 120}}
    await cluster.patch(CRON_JOB, edit)
    cron_job = await cluster.eventually(CRON_JOB, lambda o: o["spec"]["successfulJobsHistoryLimit"] == 3)
    assert cron_job["spec"]["startingDeadlineSeconds"] == 120  # not the operator's field: left alone


async def test_a_field_no_longer_rendered_is_dropped_from_the_cron_job(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    cron_job = await cluster.eventually(CRON_JOB, lambda o: True)
    assert cron_job["spec"]["timeZone"] == "Etc/UTC"
    await cluster.patch(f"{JOBS}/nightly", {"spec": {"timeZone": None}})
    await cluster.eventually(CRON_JOB, lambda o: "timeZone" not in o["spec"])


async def test_a_child_name_taken_by_another_object_is_a_name_conflict_never_a_takeover(
    cluster: Cluster,
) -> None:
    """Issue 10 §5: a resource must never overwrite or adopt an object it does not control."""
    await cluster.post(JOBS, pgqj("victim"))
    await cluster.eventually(f"{JOBS}/victim", lambda o: (ready(o) or {}).get("status") == "True")
    victim = await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-victim")
    assert victim is not None
    # Another resource whose children would have the victim's names.
    attacker = pgqj("attacker", {**VALID_SPEC, "schedule": "* * * * *", "image": "evil/image:1"})
    await cluster.post(JOBS, attacker)
    await cluster.eventually(f"{JOBS}/attacker", lambda o: ready(o) is not None)
    rendered = manifests.render(
        {**attacker, "metadata": {"name": "attacker", "namespace": "db", "uid": "x"}}, defaults=DEFAULTS
    )
    store = kubeapi.KubernetesStore(kubernetes.client.Configuration(host=cluster.url))
    owner = await cluster.get(f"{JOBS}/attacker")
    renamed = rendered.cron_job | {"metadata": {**rendered.cron_job["metadata"], "name": "pgqj-victim"}}
    with pytest.raises(children.NameConflict, match="controlled by PgQuartzJob 'victim'"):
        await asyncio.to_thread(
            children.apply_rendered, store, manifests.Rendered(rendered.config_map, renamed), owner
        )
    after = await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-victim")
    assert after == victim  # not a byte changed


async def test_an_unowned_object_in_the_way_is_reported_and_then_replaced_once_gone(cluster: Cluster) -> None:
    squatter = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "pgqj-nightly", "namespace": "db"},
        "data": {"x": "y"},
    }
    await cluster.post("/api/v1/namespaces/db/configmaps", squatter)
    await cluster.post(JOBS, pgqj("nightly"))
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: ready(o) is not None)
    condition = ready(obj)
    assert condition is not None and condition["reason"] == "NameConflict"
    assert "ConfigMap 'pgqj-nightly' exists and is not controlled by this PgQuartzJob" in condition["message"]
    assert await cluster.get(CRON_JOB) is None  # nothing written, not even the free name
    async with cluster.session.delete(cluster.url + CONFIG_MAP) as response:
        assert response.status < 300
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")


async def test_a_write_the_api_server_refuses_is_a_rejected_condition_not_a_retry_loop(
    cluster: Cluster,
) -> None:
    cluster.emulator.admission = lambda obj: (
        "images must come from registry.example" if obj.get("kind") == "CronJob" else None
    )
    await cluster.post(JOBS, pgqj("nightly"))
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: ready(o) is not None)
    condition = ready(obj)
    assert condition is not None and condition["status"] == "False" and condition["reason"] == "Rejected"
    assert "denied the request: images must come from registry.example" in condition["message"]
    await asyncio.sleep(1.5)
    attempts = [w for w in cluster.operator_writes() if "/cronjobs/" in w]
    assert len(attempts) == 1  # refused once, not retried
    warnings = [
        e
        for e in (await cluster.get("/api/v1/namespaces/db/events") or {}).get("items", [])
        if e["reason"] == "Rejected"
    ]
    assert len(warnings) == 1


async def test_observed_generation_follows_every_generation(cluster: Cluster) -> None:
    """60 quick flips of spec.suspend end where they started: kopf sees no change, status must."""
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    for flip in range(60):
        await cluster.patch(f"{JOBS}/nightly", {"spec": {"suspend": flip % 2 == 0}})
    obj = await cluster.eventually(
        f"{JOBS}/nightly",
        lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"],
        within=20,
    )
    assert obj["metadata"]["generation"] == 61
    assert ready(obj)["observedGeneration"] == 61  # type: ignore[index]


async def test_a_spec_asking_for_what_the_policy_forbids_is_not_allowed(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC) | {
        "image": "evil/miner:1",
        "podTemplate": {"serviceAccountName": "admin"},
    }
    condition = await refused(cluster, "greedy", spec)
    assert condition["reason"] == "NotAllowed"
    assert "spec.image: 'evil/miner:1' is not an allowed image" in condition["message"]
    assert (
        "spec.podTemplate.serviceAccountName: not allowed (PGQUARTZ_ALLOW_SERVICE_ACCOUNTS)"
        in (condition["message"])
    )


async def test_a_lock_key_naming_another_namespace_stays_in_its_own(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC) | {"lock": {"key": "payments/nightly-vacuum"}}
    await cluster.post(JOBS, pgqj("nightly", spec))
    config_map = await cluster.eventually(CONFIG_MAP, lambda o: True)
    job_file = yaml.safe_load(config_map["data"]["nightly.yml"])
    assert job_file["etcdConfig"]["lockKey"] == "db/payments/nightly-vacuum"


async def test_run_now_runs_only_what_reconcile_accepted(cluster: Cluster) -> None:
    """Issue 10 §8: one patch with an invalid job, a new image and service account and a run-now."""
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["vacuum"]["depends"] = ["nothing"]
    spec["image"] = "pgquartz/runner:other"
    spec["podTemplate"] = {"serviceAccountName": "admin"}
    await cluster.patch(
        f"{JOBS}/nightly", {"metadata": {"annotations": {"pgquartz.io/run-now": "now"}}, "spec": spec}
    )
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: o["status"].get("handledRunNow") == "now")
    assert ready(obj)["status"] == "False"  # type: ignore[index]
    assert await jobs(cluster) == []  # nothing ran
    listing = await cluster.eventually(
        "/api/v1/namespaces/db/events",
        lambda listing: any(e.get("reason") == "RunNowRefused" for e in listing.get("items", [])),
    )
    [refusal] = [e for e in listing["items"] if e["reason"] == "RunNowRefused"]
    assert refusal["message"].startswith("run-now 'now' not started: the PgQuartzJob is not ready")


async def test_run_now_starts_a_job_from_the_cron_jobs_template_for_each_request_even_a_repeated_one(
    cluster: Cluster,
) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    cron_job = await cluster.get(CRON_JOB)
    assert cron_job is not None
    for count, value in enumerate(("A", "B", "A"), start=1):
        await cluster.patch(f"{JOBS}/nightly", {"metadata": {"annotations": {"pgquartz.io/run-now": value}}})
        await cluster.eventually(f"{JOBS}/nightly", lambda o, v=value: o["status"].get("handledRunNow") == v)
        started = await jobs(cluster)
        assert len(started) == count
    template = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert all(job["spec"]["template"]["spec"]["containers"] == template["containers"] for job in started)


async def test_a_huge_run_now_value_is_shown_as_a_digest(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    huge = "x" * 100_000
    await cluster.patch(f"{JOBS}/nightly", {"metadata": {"annotations": {"pgquartz.io/run-now": huge}}})
    obj = await cluster.eventually(
        f"{JOBS}/nightly", lambda o: str(o["status"].get("handledRunNow", "")).startswith("sha256:")
    )
    assert len(obj["status"]["handledRunNow"]) < 64
    [job] = await jobs(cluster)
    assert len(job["metadata"]["annotations"]["pgquartz.io/run-now"]) < 64
    events = (await cluster.get("/api/v1/namespaces/db/events") or {}).get("items", [])
    assert all(len(e["message"]) < 2048 for e in events)


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ('"x" * 800000000 == steps["vacuum"].stdout', "works on numbers"),
        ('steps["vacuum"].rc == 99999999 ** 99999999', "limited to 4096 bits"),
        ("(" * 3000 + 'steps["vacuum"].rc' + ")" * 3000, "at most 4096 characters"),
        ("{{if " * 40 + ".Steps" + "}}True{{end}}" * 40, "nest more than 32 deep"),
    ],
)
async def test_a_hostile_rule_is_an_invalid_job_and_everyone_else_is_served(
    cluster: Cluster, rule: str, reason: str
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["analyze"] = {"when": [rule], "commands": [{"type": "primary", "inline": "analyze"}]}
    condition = await refused(cluster, "hostile", spec)
    assert condition["reason"] == "InvalidJob" and reason in condition["message"]
    await cluster.post(JOBS, pgqj("innocent"))
    await cluster.eventually(f"{JOBS}/innocent", lambda o: (ready(o) or {}).get("status") == "True")


async def test_a_matrix_of_a_billion_instances_is_refused_before_it_is_expanded(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    values = [str(n) for n in range(1000)]
    spec["job"]["steps"]["vacuum"]["matrix"] = {"a": values, "b": values, "c": values}
    condition = await refused(cluster, "explosive", spec)
    assert condition["reason"] == "InvalidJob"
    assert "1000000001 instances" in condition["message"] and "limit of 10000" in condition["message"]


async def test_a_spec_larger_than_annotations_may_be_still_gets_its_status(cluster: Cluster) -> None:
    """kopf's bookkeeping is a digest: a 300 KiB command does not overflow the 256 KiB of annotations."""
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["vacuum"]["commands"] = [
        {"type": "primary", "inline": "select 1; -- " + "x" * 300_000}
    ]
    await cluster.post(JOBS, pgqj("large", spec))
    obj = await cluster.eventually(f"{JOBS}/large", lambda o: (ready(o) or {}).get("status") == "True")
    annotations = obj["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 1024


async def test_job_files_over_a_config_maps_limit_are_refused_naming_it(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["vacuum"]["commands"] = [
        {"type": "primary", "inline": "select 1; -- " + "x" * 1_100_000}
    ]
    condition = await refused(cluster, "huge", spec)
    assert condition["reason"] == "InvalidSpec"
    assert "more than a ConfigMap holds (1048576 bytes)" in condition["message"]


async def test_many_targets_share_one_copy_of_a_large_job(cluster: Cluster) -> None:
    """8 targets × a 150 KB job: 1.2 MB if copied per target, more than a ConfigMap holds."""
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["vacuum"]["commands"] = [
        {"type": "primary", "inline": "select 1; -- " + "x" * 150_000}
    ]
    spec["targets"] = [
        {"name": f"node-{n}", "connections": {"primary": {"host": f"pg-{n}"}}} for n in range(8)
    ]
    await cluster.post(JOBS, pgqj("nightly", spec))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    config_map = await cluster.get(CONFIG_MAP)
    assert config_map is not None
    assert sum(len(text) for text in config_map["data"].values()) < 200_000


async def test_a_transient_api_failure_is_retried_with_back_off_not_reported(cluster: Cluster) -> None:
    cluster.emulator.unavailable["CronJob"] = 2
    await cluster.post(JOBS, pgqj("nightly"))
    obj = await cluster.eventually(
        f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True", within=20
    )
    assert ready(obj)["reason"] == "ObjectsInPlace"  # type: ignore[index]
    assert cluster.emulator.unavailable["CronJob"] == 0
    errors = cluster.metrics.registry.get_sample_value(
        "pgquartz_reconcile_errors_total", {"namespace": "db", "name": "nightly"}
    )
    assert errors == 2.0
    events = (await cluster.get("/api/v1/namespaces/db/events") or {}).get("items", [])
    assert not [e for e in events if e["type"] == "Warning"]


async def test_an_event_the_api_fails_to_take_is_posted_later_and_fails_nothing(cluster: Cluster) -> None:
    cluster.emulator.unavailable["Event"] = 2  # the handler's post, then kopf's first retry
    await cluster.post(JOBS, pgqj("nightly"))
    obj = await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    assert ready(obj)["reason"] == "ObjectsInPlace"  # type: ignore[index]
    await cluster.eventually(
        "/api/v1/namespaces/db/events", lambda listing: bool(listing.get("items")), within=15
    )
    assert cluster.emulator.unavailable["Event"] == 0
    await asyncio.sleep(1.0)
    events = await cluster.get("/api/v1/namespaces/db/events") or {}
    assert [e["reason"] for e in events["items"]] == ["Created"], "posted once, and once only"
    errors = cluster.metrics.registry.get_sample_value(
        "pgquartz_reconcile_errors_total", {"namespace": "db", "name": "nightly"}
    )
    assert errors is None


async def test_events_come_from_the_operator_about_the_resource(cluster: Cluster) -> None:
    created = await cluster.post(JOBS, pgqj("nightly"))
    events = await cluster.eventually(
        "/api/v1/namespaces/db/events", lambda listing: bool(listing.get("items"))
    )
    [event] = events["items"]
    assert event["metadata"]["name"].startswith("nightly.")
    assert event["involvedObject"] == {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "name": "nightly",
        "namespace": "db",
        "uid": created["metadata"]["uid"],
    }
    assert (event["type"], event["reason"], event["source"]) == (
        "Normal",
        "Created",
        {"component": "pgquartz-operator"},
    )


@pytest.mark.parametrize("length", [64, 100, 253])
async def test_any_valid_name_gets_its_objects_within_kubernetes_limits(
    cluster: Cluster, length: int
) -> None:
    name = ("nightly-vacuum-of-the-orders-database-" * 8)[: length - 1] + "x"
    await cluster.post(JOBS, pgqj(name))
    obj = await cluster.eventually(f"{JOBS}/{name}", lambda o: (ready(o) or {}).get("status") == "True")
    child = manifests.names.child_name(name)
    assert len(child) == 52 and child in ready(obj)["message"]  # type: ignore[index]
    cron_job = await cluster.get(f"/apis/batch/v1/namespaces/db/cronjobs/{child}")
    assert cron_job is not None
    assert len(cron_job["metadata"]["labels"]["pgquartz.io/job"]) <= 63
    assert cron_job["metadata"]["annotations"]["pgquartz.io/job-name"] == name
    config_map = await cluster.get(f"/api/v1/namespaces/db/configmaps/{child}")
    assert config_map is not None and all(len(key) <= 253 for key in config_map["data"])


async def test_quantities_the_server_rewrites_are_no_drift(cluster: Cluster) -> None:
    """The API server stores 1000m as 1 and 1024Mi as 1Gi: the same quantities, so no writes."""
    spec = copy.deepcopy(VALID_SPEC) | {
        "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}, "requests": {"cpu": "0.5"}}
    }
    await cluster.post(JOBS, pgqj("nightly", spec))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    cron_job = await cluster.get(CRON_JOB)
    assert cron_job is not None
    container = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}
    assert await cluster.writes_during_scheduled_runs(5) == []


async def test_only_the_operators_own_jobs_and_cron_jobs_are_streamed_to_it(cluster: Cluster) -> None:
    """Other teams' Jobs and CronJobs are selected out by the server, never sent to the operator."""
    theirs = {"metadata": {"name": "theirs", "namespace": "db", "labels": {"team": "web"}}}
    template = {
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }
    await cluster.post(
        "/apis/batch/v1/namespaces/db/cronjobs",
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            **theirs,
            "spec": {"schedule": "* * * * *", "jobTemplate": template},
        },
    )
    await cluster.post(
        "/apis/batch/v1/namespaces/db/jobs",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            **theirs,
            **template,
        },
    )
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually(f"{JOBS}/nightly", lambda o: (ready(o) or {}).get("status") == "True")
    streams = {
        resource: [
            request.params.get("labelSelector")
            for request in cluster.emulator.history
            if request.method == "GET" and request.url.path.endswith(f"/batch/v1/{resource}")
        ]
        for resource in ("cronjobs", "jobs")
    }
    assert streams["cronjobs"] and set(streams["cronjobs"]) == {
        "app.kubernetes.io/managed-by=pgquartz-operator,pgquartz.io/job"
    }
    assert streams["jobs"] and set(streams["jobs"]) == {"pgquartz.io/job"}


async def test_a_cluster_in_another_namespace_is_not_allowed_by_default(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"] = {
        "cluster": {"kind": "Zalando", "name": "acid", "namespace": "other"},
        "passwordSecretRef": {"name": "pg-maint", "key": "password"},
    }
    await cluster.post(JOBS, pgqj("elsewhere", spec))
    obj = await cluster.eventually(f"{JOBS}/elsewhere", lambda o: ready(o) is not None)
    condition = ready(obj) or {}
    assert (condition.get("status"), condition.get("reason")) == ("False", "NotAllowed")
    assert "PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS" in condition["message"]
    assert await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-elsewhere") is None
