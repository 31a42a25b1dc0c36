"""The operator-test emulator behaves like an API server where kopf depends on it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import kopf

from tests.support.kube import running_emulator, running_kopf

RESOURCE = "pgquartz.io/v1alpha1/pgquartzjobs"
URL = "/apis/pgquartz.io/v1alpha1/namespaces/db/pgquartzjobs"


async def test_objects_get_identity_versions_and_their_namespace() -> None:
    async with running_emulator() as (emulator, url), aiohttp.ClientSession() as session:
        emulator.register(RESOURCE, kind="PgQuartzJob", status=True)
        created = await (await session.post(url + URL, json={"metadata": {"name": "a"}, "spec": {}})).json()
        meta = created["metadata"]
        assert meta["namespace"] == "db" and meta["uid"] and meta["creationTimestamp"]
        patched = await (
            await session.patch(
                f"{url}{URL}/a",
                json={"metadata": {"labels": {"x": "y"}}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        ).json()
        assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
        stale = await session.patch(
            f"{url}{URL}/a",
            json=[{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert stale.status == 422


async def test_kopf_handles_a_created_object_once() -> None:
    registry = kopf.OperatorRegistry()
    seen: list[str] = []

    @kopf.on.create("pgquartz.io", "v1alpha1", "pgquartzjobs", registry=registry)
    async def created(name: str, **_: Any) -> None:
        seen.append(name)

    async with running_emulator() as (emulator, url), running_kopf(registry, url):
        emulator.register(RESOURCE, kind="PgQuartzJob", status=True)
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session:
            await session.post(url + URL, json={"metadata": {"name": "nightly"}, "spec": {}})
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # a second invocation would show up here
    assert seen == ["nightly"]
