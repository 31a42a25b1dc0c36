"""A Kubernetes API for operator tests: kmock's emulator, made realistic enough for kopf.

kmock's ``KubernetesEmulator`` serves discovery, list, watch, create, patch and
delete over real HTTP, but assigns no ``uid``, ``resourceVersion`` or
``creationTimestamp``, does not take ``metadata.namespace`` from the URL, and
answers a failed JSON-patch ``test`` with 500 instead of 422. kopf depends on
all of these (its finalizer patch tests ``resourceVersion``), so
:class:`Emulator` adds them. :func:`running_kopf` runs a kopf registry against
it with ``spawn_tasks`` + ``run_tasks`` (``kopf.operator()`` would cancel the
test's own tasks on shutdown), keeping kopf's bookkeeping under ``pgquartz.io``.

What the emulator still does not do (so tests cannot see it): schema
validation and defaulting, ownerReference garbage collection, server-side
apply, ``dryRun``, and resuming a watch from a ``resourceVersion``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import jsonpatch
import kmock
import kopf
from kmock._internal import enums, k8s

VERBS = ["list", "watch", "get", "create", "patch", "update", "delete"]


@attrs.frozen
class Unprocessable(k8s.KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = "a JSON-patch test operation failed"


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with object identity, versions, namespaces from URLs and 422s."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)

    def register(self, resource: str, *, kind: str, namespaced: bool = True, status: bool = False) -> None:
        self.resources[resource] = {
            "kind": kind,
            "namespaced": namespaced,
            "verbs": VERBS,
            "subresources": ["status"] if status else [],
        }

    async def _handle(self, request: Any) -> Any:
        # The request is frozen, and kmock's matching needs the very same object: amend in place.
        if request.resource is not None:
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                object.__setattr__(request, "data", self._identify(request.data, request.namespace))
                # kmock keys new objects by the name in the body, so generateName must be resolved first
            elif request.action == enums.action.UPDATE and request.name is not None:
                version = str(next(self._versions))
                if isinstance(request.data, dict):
                    data = dict(request.data)
                    data["metadata"] = {**(data.get("metadata") or {}), "resourceVersion": version}
                    object.__setattr__(request, "data", data)
                elif isinstance(request.data, list):
                    bump = {"op": "add", "path": "/metadata/resourceVersion", "value": version}
                    object.__setattr__(request, "data", [*request.data, bump])
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed:
            raise Unprocessable() from None

    def _identify(self, data: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        metadata = dict(data.get("metadata") or {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata["resourceVersion"] = str(next(self._versions))
        metadata.setdefault(
            "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        metadata.setdefault("generation", 1)
        if namespace and "namespace" not in metadata:
            metadata["namespace"] = namespace
        return {**data, "metadata": metadata}


@contextlib.asynccontextmanager
async def running_emulator() -> AsyncIterator[tuple[Emulator, str]]:
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        emulator.register("v1/namespaces", kind="Namespace", namespaced=False)
        emulator.register("v1/events", kind="Event")
        yield emulator, str(server.url).rstrip("/")


def settings() -> kopf.OperatorSettings:
    """kopf's bookkeeping under pgquartz.io (annotations), never in fields Argo CD compares."""
    configured = kopf.OperatorSettings()
    configured.persistence.finalizer = "pgquartz.io/finalizer"
    configured.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="pgquartz.io")
    configured.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="pgquartz.io")
    return configured


@contextlib.asynccontextmanager
async def running_kopf(registry: kopf.OperatorRegistry, url: str) -> AsyncIterator[None]:
    """Run kopf against the emulator; stop it (and only its own tasks) afterwards."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    stop = asyncio.Event()
    ignored = set(asyncio.all_tasks())  # kopf cancels every other task when it stops
    tasks = await kopf.spawn_tasks(
        registry=registry, settings=settings(), clusterwide=True, stop_flag=stop, standalone=True
    )
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored))
    try:
        yield
    finally:
        # pytest-asyncio may tear down in another task than it set up in: spare that one too.
        current = asyncio.current_task()
        if current is not None:
            ignored.add(current)
        stop.set()
        await asyncio.wait([runner], timeout=15)
