"""The operator against the emulated API: create → objects, update → they follow, no churn, bad input."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf
import pytest
import yaml

from pgquartz.operator import handlers, kubeapi, manifests
from tests.operator.test_crd import VALID_SPEC
from tests.support.kube import Emulator, running_emulator, running_kopf

JOBS = "/apis/pgquartz.io/v1alpha1/namespaces/db/pgquartzjobs"
DEFAULTS = manifests.Defaults(image="pgquartz/runner:test", etcd_endpoints=("etcd:2379",))


class Cluster:
    def __init__(self, emulator: Emulator, url: str, session: aiohttp.ClientSession) -> None:
        self.emulator, self.url, self.session = emulator, url, session

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
            for request in self.emulator._requests
            if request.method in ("POST", "PUT", "PATCH") and fragment in str(request.url)
        )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    registry = kopf.OperatorRegistry()
    async with running_emulator() as (emulator, url):
        emulator.register("pgquartz.io/v1alpha1/pgquartzjobs", kind="PgQuartzJob", status=True)
        emulator.register("v1/configmaps", kind="ConfigMap")
        emulator.register("batch/v1/cronjobs", kind="CronJob")
        client = kubeapi.client_for(url)
        handlers.register(registry, store=lambda: kubeapi.KubernetesStore(client), defaults=DEFAULTS)
        async with running_kopf(registry, url), aiohttp.ClientSession() as session:
            await asyncio.sleep(0.5)
            yield Cluster(emulator, url, session)


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


async def test_a_spec_change_updates_the_objects(cluster: Cluster) -> None:
    await cluster.post(JOBS, pgqj("nightly"))
    await cluster.eventually("/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly", lambda o: True)
    await cluster.patch(
        f"{JOBS}/nightly", {"metadata": {"generation": 2}, "spec": {"schedule": "0 4 * * *", "suspend": True}}
    )
    cron_job = await cluster.eventually(
        "/apis/batch/v1/namespaces/db/cronjobs/pgqj-nightly", lambda o: o["spec"]["schedule"] == "0 4 * * *"
    )
    assert cron_job["spec"]["suspend"] is True


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


async def test_an_invalid_spec_is_reported_not_half_applied(cluster: Cluster) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["params"]["password"] = "inline"  # refused: use a Secret
    await cluster.post(JOBS, pgqj("broken", spec))
    obj = await cluster.eventually(f"{JOBS}/broken", lambda o: ready(o) is not None)
    condition = ready(obj)
    assert condition is not None and condition["status"] == "False" and condition["reason"] == "InvalidSpec"
    assert "passwordSecretRef" in condition["message"]
    assert await cluster.get("/apis/batch/v1/namespaces/db/cronjobs/pgqj-broken") is None
    assert await cluster.get("/api/v1/namespaces/db/configmaps/pgqj-broken") is None
    assert obj["spec"] == spec  # the user's spec is never edited
