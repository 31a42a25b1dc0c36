"""The operator-test API behaves like an API server where the operator and kopf depend on it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest

from tests.operator.test_crd import VALID_SPEC
from tests.support import kube
from tests.support.kube import Emulator, register_pgquartz, running_emulator, running_kopf

RESOURCE = "pgquartz.io/v1alpha1/pgquartzjobs"
URL = "/apis/pgquartz.io/v1alpha1/namespaces/db/pgquartzjobs"
CRON_JOBS = "/apis/batch/v1/namespaces/db/cronjobs"
JOBS = "/apis/batch/v1/namespaces/db/jobs"
CONFIG_MAPS = "/api/v1/namespaces/db/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}


class Api:
    def __init__(self, emulator: Emulator, url: str, session: aiohttp.ClientSession) -> None:
        self.emulator, self.url, self.session = emulator, url, session

    async def send(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, **params: str
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.request(
            method, self.url + path, json=body, headers=headers, params=params
        ) as response:
            return response.status, dict(await response.json())

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        status, answer = await self.send(method, path, body, **kwargs)
        assert status < 300, answer
        return answer


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_emulator() as (emulator, url), aiohttp.ClientSession() as session:
        register_pgquartz(emulator)
        yield Api(emulator, url, session)


def pgqj(name: str = "a", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "metadata": {"name": name},
        "spec": copy.deepcopy(VALID_SPEC) | spec,
    }


def cron_job(name: str = "c", **pod: Any) -> dict[str, Any]:
    container = {
        "name": "runner",
        "image": "registry.example/runner:1.0",
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [container],
                            "volumes": [{"name": "job", "configMap": {"name": "x"}}],
                            **pod,
                        }
                    }
                }
            },
        },
    }


async def test_objects_get_identity_versions_and_their_namespace(api: Api) -> None:
    created = await api.ok("POST", URL, pgqj())
    meta = created["metadata"]
    assert meta["namespace"] == "db" and meta["uid"] and meta["creationTimestamp"]
    assert meta["generation"] == 1
    patched = await api.ok("PATCH", f"{URL}/a", {"metadata": {"labels": {"x": "y"}}}, headers=MERGE)
    assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, _ = await api.send(
        "PATCH",
        f"{URL}/a",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert status == 422
    status, answer = await api.send("POST", URL, pgqj())
    assert status == 409 and answer["reason"] == "AlreadyExists"


async def test_built_in_kinds_get_the_api_servers_defaults(api: Api) -> None:
    stored = await api.ok("POST", CRON_JOBS, cron_job())
    spec = stored["spec"]
    assert (spec["suspend"], spec["concurrencyPolicy"]) == (False, "Allow")
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["dnsPolicy"] == "ClusterFirst" and pod["schedulerName"] == "default-scheduler"
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["securityContext"] == {}
    [container] = pod["containers"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert pod["volumes"][0]["configMap"]["defaultMode"] == 0o644
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]  # a CronJob's template gets no Job defaults
    latest = cron_job("latest")
    latest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "runner"
    stored = await api.ok("POST", CRON_JOBS, latest)
    assert stored["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == (
        "Always"
    )


async def test_a_job_gets_its_defaults_and_its_controllers_selector(api: Api) -> None:
    template = cron_job()["spec"]["jobTemplate"]
    template["spec"]["podFailurePolicy"] = {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": template["spec"]}
    stored = await api.ok("POST", JOBS, job)
    spec = stored["spec"]
    assert (spec["backoffLimit"], spec["completionMode"], spec["parallelism"], spec["completions"]) == (
        6,
        "NonIndexed",
        1,
        1,
    )
    uid = stored["metadata"]["uid"]
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"]["job-name"] == "j"


async def test_custom_resources_get_their_schemas_defaults_and_lose_unknown_fields(api: Api) -> None:
    body = pgqj()
    body["spec"]["unknownField"] = 1
    stored = await api.ok("POST", URL, body)
    assert stored["spec"]["suspend"] is False and stored["spec"]["concurrencyPolicy"] == "Forbid"
    assert "unknownField" not in stored["spec"]
    status, answer = await api.send("POST", URL, pgqj("strict", unknownField=1), fieldValidation="Strict")
    assert status == 400 and 'unknown field "spec.unknownField"' in answer["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o["metadata"].update(name="c" * 53), "metadata.name: Invalid value"),
        (
            lambda o: o["metadata"].update(labels={"pgquartz.io/job": "x" * 64}),
            "metadata.labels[pgquartz.io/job]",
        ),
        (lambda o: _container(o).update(resources={"requests": {"cpu": "-1"}}), "resources.requests[cpu]"),
        (lambda o: _container(o).update(resources={"limits": {"cpu": "lots"}}), "resources.limits[cpu]"),
        (lambda o: _container(o)["env"].append({"name": "PGQ_PASSWORD_БАЗА", "value": "x"}), "env[1].name"),
        (lambda o: _pod(o).update(tolerations=[{"key": "x", "hostPath": "/"}]), "tolerations[0]"),
        (lambda o: _pod(o).update(restartPolicy="Always"), "restartPolicy"),
    ],
)
async def test_built_in_kinds_are_validated(api: Api, change: Any, field: str) -> None:
    body = cron_job()
    change(body)
    status, answer = await api.send("POST", CRON_JOBS, body)
    assert status == 422, answer
    assert answer["reason"] == "Invalid" and field in answer["message"]


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(obj)["containers"][0]
    return container


async def test_validation_follows_the_cluster_version(api: Api) -> None:
    """kubernetes/kubernetes#131512: 1.25-1.34 require onPodConditions[].status in a CronJob."""
    body = cron_job()
    body["spec"]["jobTemplate"]["spec"]["podFailurePolicy"] = {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    }
    status, answer = await api.send("POST", CRON_JOBS, body)
    assert status == 422 and "onPodConditions[0]: Required value" in answer["message"]
    api.emulator.minor = "1.35"
    status, _ = await api.send("POST", CRON_JOBS, body)
    assert status == 201


async def test_config_maps_are_limited_in_size_and_key_names(api: Api) -> None:
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big"},
        "data": {"a": "x" * ((1 << 20) + 1)},
    }
    status, answer = await api.send("POST", CONFIG_MAPS, big)
    assert status == 422 and "at most 1048576 bytes" in answer["message"]
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}, "data": {"a b": "x"}}
    status, _ = await api.send("POST", CONFIG_MAPS, bad)
    assert status == 422


async def test_custom_resources_are_validated_by_schema_and_cel(api: Api) -> None:
    status, answer = await api.send("POST", URL, pgqj(concurrencyPolicy="Sometimes"))
    assert status == 422 and "spec.concurrencyPolicy" in answer["message"]
    body = pgqj()
    body["spec"]["connections"]["primary"]["params"]["password"] = "hunter2"
    status, answer = await api.send("POST", URL, body)
    assert status == 422 and "passwords go in a Secret" in answer["message"]
    assert "hunter2" not in json.dumps(answer)
    status, answer = await api.send("POST", URL, pgqj(targets=[{"name": "a"}, {"name": "a"}]))
    assert status == 422 and "Duplicate value" in answer["message"]


async def test_a_write_that_changes_nothing_stores_no_version(api: Api) -> None:
    stored = await api.ok("POST", URL, pgqj())
    history = api.emulator.objects[RESOURCE, "db", "a"].history
    versions = len(history)
    same = await api.ok("PATCH", f"{URL}/a", {"spec": {"schedule": VALID_SPEC["schedule"]}}, headers=MERGE)
    defaulted = await api.ok("PATCH", f"{URL}/a", {"spec": {"suspend": False}}, headers=MERGE)
    assert same["metadata"]["resourceVersion"] == defaulted["metadata"]["resourceVersion"]
    assert same["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert len(history) == versions  # no version stored, so no watch event sent


async def test_generation_moves_on_spec_changes_only(api: Api) -> None:
    await api.ok("POST", URL, pgqj())
    labelled = await api.ok("PATCH", f"{URL}/a", {"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
    assert labelled["metadata"]["generation"] == 1
    changed = await api.ok("PATCH", f"{URL}/a", {"spec": {"suspend": True}}, headers=MERGE)
    assert changed["metadata"]["generation"] == 2
    status = await api.ok("PATCH", f"{URL}/a/status", {"status": {"observedGeneration": 2}}, headers=MERGE)
    assert status["metadata"]["generation"] == 2 and status["status"]["observedGeneration"] == 2


async def test_status_is_written_through_its_subresource_only(api: Api) -> None:
    await api.ok("POST", URL, pgqj() | {"status": {"observedGeneration": 9}})
    main = await api.ok("PATCH", f"{URL}/a", {"status": {"observedGeneration": 7}}, headers=MERGE)
    assert "status" not in main
    sub = await api.ok(
        "PATCH",
        f"{URL}/a/status",
        {"spec": {"suspend": True}, "status": {"observedGeneration": 7}},
        headers=MERGE,
    )
    assert sub["status"] == {"observedGeneration": 7} and sub["spec"]["suspend"] is False


async def test_preserved_unknown_fields_are_kept_beside_declared_ones(api: Api) -> None:
    """``x-kubernetes-preserve-unknown-fields`` with ``properties`` (status.bookkeeping): what is
    declared is checked and pruned as declared, anything else is kept, as the API server does."""
    await api.ok("POST", URL, pgqj())
    status = {"bookkeeping": {"handledSpec": "sha256:x", "progress": {"h": {"retries": 1}}}}
    sub = await api.ok("PATCH", f"{URL}/a/status", {"status": status}, headers=MERGE)
    assert sub["status"]["bookkeeping"] == status["bookkeeping"]
    answer = await api.send(
        "PATCH", f"{URL}/a/status", {"status": {"bookkeeping": {"handledSpec": 1}}}, headers=MERGE
    )
    assert answer[0] == 422


async def test_server_side_apply_owns_fields_and_drops_what_is_no_longer_applied(api: Api) -> None:
    first = cron_job()
    first["spec"]["timeZone"] = "Etc/UTC"
    await api.ok("PATCH", f"{CRON_JOBS}/c", first, headers=APPLY, fieldManager="operator", force="true")
    # Someone else sets a field of their own, and one the operator owns.
    edit = {"spec": {"startingDeadlineSeconds": 60, "schedule": "0 * * * *"}}
    await api.ok("PATCH", f"{CRON_JOBS}/c", edit, headers=MERGE, fieldManager="kubectl-edit")
    second = cron_job()  # no timeZone any more
    status, answer = await api.send("PATCH", f"{CRON_JOBS}/c", second, headers=APPLY, fieldManager="operator")
    assert status == 409 and 'conflict with "kubectl-edit": .spec.schedule' in answer["message"]
    stored = await api.ok(
        "PATCH", f"{CRON_JOBS}/c", second, headers=APPLY, fieldManager="operator", force="true"
    )
    assert "timeZone" not in stored["spec"]  # the operator no longer applies it: gone
    assert stored["spec"]["schedule"] == "* * * * *"  # forced back
    assert stored["spec"]["startingDeadlineSeconds"] == 60  # someone else's: kept
    again = await api.ok(
        "PATCH", f"{CRON_JOBS}/c", second, headers=APPLY, fieldManager="operator", force="true"
    )
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]  # a no-op apply


async def test_server_side_apply_merges_keyed_lists_by_key(api: Api) -> None:
    await api.ok("PATCH", f"{CRON_JOBS}/c", cron_job(), headers=APPLY, fieldManager="operator")
    sidecar = cron_job()
    _pod(sidecar)["containers"] = [{"name": "sidecar", "image": "proxy:1"}]
    _pod(sidecar)["volumes"] = []
    stored = await api.ok("PATCH", f"{CRON_JOBS}/c", sidecar, headers=APPLY, fieldManager="mesh")
    assert [c["name"] for c in _pod(stored)["containers"]] == ["runner", "sidecar"]


async def test_a_strategic_merge_patch_merges_lists_by_their_merge_key(api: Api) -> None:
    await api.ok("POST", CRON_JOBS, cron_job())
    patch = {
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "runner", "image": "b:2"}]}}}
            }
        }
    }
    stored = await api.ok(
        "PATCH", f"{CRON_JOBS}/c", patch, headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    [container] = _pod(stored)["containers"]
    assert container["image"] == "b:2" and container["env"][0]["name"] == "POD"
    status, _ = await api.send(
        "PATCH", f"{URL}/a", {"spec": {}}, headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert status in (404, 415)


async def test_a_deleted_object_with_finalizers_goes_once_they_are_removed(api: Api) -> None:
    await api.ok("POST", URL, pgqj() | {"metadata": {"name": "a", "finalizers": ["pgquartz.io/finalizer"]}})
    await api.ok("DELETE", f"{URL}/a")
    assert (await api.ok("GET", f"{URL}/a"))["metadata"]["deletionTimestamp"]
    await api.ok("PATCH", f"{URL}/a", {"metadata": {"finalizers": None}}, headers=MERGE)
    status, _ = await api.send("GET", f"{URL}/a")
    assert status == 404


async def test_kopf_handles_a_created_object_once() -> None:
    registry = kopf.OperatorRegistry()
    seen: list[str] = []

    @kopf.on.create("pgquartz.io", "v1alpha1", "pgquartzjobs", registry=registry)
    async def created(name: str, **_: Any) -> None:
        seen.append(name)

    async with running_emulator() as (emulator, url), running_kopf(registry, url):
        register_pgquartz(emulator)
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session:
            await session.post(url + URL, json=pgqj("nightly"))
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # a second invocation would show up here
    assert seen == ["nightly"]


def labelled(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}


async def test_a_list_returns_what_its_label_selector_selects(api: Api) -> None:
    await api.ok("POST", CONFIG_MAPS, labelled("ours", team="db", tier="a"))
    await api.ok("POST", CONFIG_MAPS, labelled("theirs", team="web"))
    await api.ok("POST", CONFIG_MAPS, labelled("bare"))

    async def names(selector: str) -> list[str]:
        answer = await api.ok("GET", CONFIG_MAPS, labelSelector=selector)
        return sorted(item["metadata"]["name"] for item in answer["items"])

    assert await names("team=db") == ["ours"]
    assert await names("team") == ["ours", "theirs"]
    assert await names("!team") == ["bare"]
    assert await names("team!=db") == ["bare", "theirs"]
    assert await names("team in (db, web),tier notin (b)") == ["ours", "theirs"]
    status, answer = await api.send("GET", CONFIG_MAPS, labelSelector="team==")
    assert status == 200  # an empty value is a value
    status, answer = await api.send("GET", CONFIG_MAPS, labelSelector="team in db")
    assert status == 400 and answer["reason"] == "BadRequest"


async def test_a_watch_sees_objects_enter_and_leave_its_label_selector(api: Api) -> None:
    await api.ok("POST", CONFIG_MAPS, labelled("early", team="db"))
    await api.ok("POST", CONFIG_MAPS, labelled("other", team="web"))
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        params = {"watch": "true", "labelSelector": "team=db"}
        async with api.session.get(api.url + CONFIG_MAPS, params=params) as response:
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    await api.ok("PATCH", f"{CONFIG_MAPS}/other", {"metadata": {"labels": {"team": "db"}}}, headers=MERGE)
    await api.ok("PATCH", f"{CONFIG_MAPS}/early", {"data": {"k": "v"}}, headers=MERGE)
    await api.ok("PATCH", f"{CONFIG_MAPS}/early", {"metadata": {"labels": {"team": "ops"}}}, headers=MERGE)
    await api.ok("POST", CONFIG_MAPS, labelled("unrelated", team="web"))
    await api.ok("DELETE", f"{CONFIG_MAPS}/unrelated")
    await api.ok("DELETE", f"{CONFIG_MAPS}/other")
    await asyncio.sleep(0.3)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert seen == [
        ("ADDED", "early"),
        ("ADDED", "other"),
        ("MODIFIED", "early"),
        ("DELETED", "early"),
        ("DELETED", "other"),
    ]


async def test_a_watch_from_a_lists_version_sees_only_what_changed_since(api: Api) -> None:
    """As kopf watches, from its list's resourceVersion: objects it listed do not come again."""
    await api.ok("POST", CONFIG_MAPS, labelled("listed", team="db"))
    await api.ok("POST", CONFIG_MAPS, labelled("changed", team="db"))
    listing = await api.ok("GET", CONFIG_MAPS, labelSelector="team=db")
    version = listing["metadata"]["resourceVersion"]
    assert version.isdigit() and int(version) > 0
    await api.ok("PATCH", f"{CONFIG_MAPS}/changed", {"data": {"k": "v"}}, headers=MERGE)
    await api.ok("POST", CONFIG_MAPS, labelled("new", team="db"))
    seen: list[tuple[str, str]] = []

    async def watch(since: str) -> None:
        params = {"watch": "true", "labelSelector": "team=db", "resourceVersion": since}
        async with api.session.get(api.url + CONFIG_MAPS, params=params) as response:
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))

    watcher = asyncio.create_task(watch(version))
    await asyncio.sleep(0.3)
    await api.ok("PATCH", f"{CONFIG_MAPS}/listed", {"data": {"k": "v"}}, headers=MERGE)
    await asyncio.sleep(0.3)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    # A listed object that changes later is MODIFIED, not ADDED (it was in the selection all along).
    assert sorted(seen[:2]) == [("ADDED", "new"), ("MODIFIED", "changed")]
    assert seen[2:] == [("MODIFIED", "listed")]

    seen.clear()
    watcher = asyncio.create_task(watch("0"))  # from no particular version: everything, as ADDED
    await asyncio.sleep(0.3)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert sorted(seen) == [("ADDED", "changed"), ("ADDED", "listed"), ("ADDED", "new")]


async def test_a_missing_object_is_a_404_status_as_a_server_words_it(api: Api) -> None:
    await api.ok("POST", CONFIG_MAPS, labelled("present"))
    assert (await api.ok("GET", f"{CONFIG_MAPS}/present"))["metadata"]["name"] == "present"
    status, answer = await api.send("GET", f"{CONFIG_MAPS}/absent")
    assert status == 404
    assert (answer["kind"], answer["reason"], answer["code"]) == ("Status", "NotFound", 404)
    assert answer["message"] == 'configmaps "absent" not found'
    assert "traceback" not in json.dumps(answer)
    await api.ok("DELETE", f"{CONFIG_MAPS}/present")
    status, _ = await api.send("GET", f"{CONFIG_MAPS}/present")
    assert status == 404


async def test_generated_names_are_drawn_again_when_taken(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the API server names objects from generateName (kopf names its events so)."""
    draws = iter(["bbbbb", "bbbbb", "c2d4f"])
    monkeypatch.setattr(kube.random, "choices", lambda alphabet, k: list(next(draws)))
    first = await api.ok(
        "POST", CONFIG_MAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}
    )
    second = await api.ok(
        "POST", CONFIG_MAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}
    )
    assert (first["metadata"]["name"], second["metadata"]["name"]) == ("x-bbbbb", "x-c2d4f")
    monkeypatch.undo()
    third = await api.ok(
        "POST", CONFIG_MAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}
    )
    suffix = third["metadata"]["name"].removeprefix("x-")
    assert len(suffix) == 5 and set(suffix) <= set(kube.NAME_ALPHABET)
