"""A Kubernetes API for operator tests: kmock's emulator, made realistic enough for kopf and kubectl.

kmock's ``KubernetesEmulator`` serves discovery, list, watch, create, patch and
delete over real HTTP, but assigns no ``uid``, ``resourceVersion``,
``generation`` or ``creationTimestamp``, does not take ``metadata.namespace``
from the URL, and answers a failed JSON-patch ``test`` with 500 instead of 422.
kopf depends on all of these (its finalizer patch tests ``resourceVersion``), so
:class:`Emulator` adds them. It also fixes what keeps ``kubectl`` from working
against it (the core group's discovery, list kinds, singular and short names),
stores a Secret's ``stringData`` as ``data`` as the API server does, serves
lists and watches by their ``labelSelector`` (apiserver/selectors.py: an object
whose labels change into or out of a watch's selection arrives there as ADDED or
DELETED, as from the server's watch cache), reads one object by a lookup (kmock
scans them all) and answers a missing one with the server's NotFound status
(kmock formats a traceback into it), and keeps a request history that does not
make every request slower than the last. :func:`running_kopf` runs a
kopf registry against it with ``spawn_tasks`` + ``run_tasks``
(``kopf.operator()`` would cancel the test's own tasks on shutdown), keeping
kopf's bookkeeping under ``pgquartz.io``.

It also runs as its own process, like an API server (``python -m
tests.support.kube`` prints its URL, then serves until SIGTERM):
:func:`emulator_process` starts it, :func:`write_kubeconfig` points ``kubectl``
and ``pgquartz-operator`` at it, and :func:`operator_cluster` runs both, the
way the process tests and the demo use them.

What the emulator still does not do (so tests cannot see it): schema
validation and defaulting, ownerReference garbage collection, server-side
apply, ``dryRun``, server-side printer columns (``kubectl get`` shows names
and ages only), protobuf bodies (``kubectl create secret`` sends one: apply a
manifest instead). A watch resumed from a ``resourceVersion`` sees each object
that changed since in its latest form, not every change in between, and not
deletions from before the watch started.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import datetime
import json
import os
import pathlib
import random
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import aiohttp.web_server
import attrs
import jsonpatch
import jsonpointer
import kmock
import kopf
import yaml
from kmock._internal import enums, k8s, parsing

from pgquartz.operator import bookkeeping, watching
from tests.support.apiserver import defaulting, schemas, selectors, validation, writes
from tests.support.etcdcluster import make_certificates
from tests.support.processes import free_port, stop

VERBS = ["list", "watch", "get", "create", "patch", "update", "delete"]

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> Any:
    """kmock reads ``/api/v1/namespaces[/<name>[/status]]`` as a namespace prefix without a resource
    (creating a Namespace fails with a 500): these are the cluster-scoped ``namespaces`` resource."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (len(parts) <= 4 or parts[4] in ("status", "finalize")):
        name = parts[3] if len(parts) > 3 else None
        subresource = parts[4] if len(parts) > 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path


@attrs.frozen
class ApiError(k8s.KubernetesError):
    """An API server's refusal, with its Status ``details`` (causes for a 422)."""

    status: int = 422
    reason: str = "Invalid"
    message: str = ""
    details: Any = None


GENERATION_KINDS = {"PgQuartzJob", "CronJob", "Job", "Deployment"}
"""Kinds whose ``metadata.generation`` the server keeps (ConfigMaps, Secrets, Events have none)."""

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""What the API server draws generated names from (no vowels, no look-alike digits)."""
STALE = "the object has been modified; please apply your changes to the latest version and try again"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def _not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a write must change for the server to store a new version (not the version itself)."""
    metadata = {key: value for key, value in (obj.get("metadata") or {}).items() if key != "resourceVersion"}
    return {**obj, "metadata": metadata}


def _established(crd: Mapping[str, Any]) -> dict[str, Any]:
    now = _now()
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now}
        for kind, reason in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
    ]
    return {
        "conditions": conditions,
        "acceptedNames": crd.get("spec", {}).get("names", {}),
        "storedVersions": [
            version["name"] for version in crd.get("spec", {}).get("versions", []) if version.get("storage")
        ],
    }


def _label_selector(request: Any) -> list[selectors.Requirement]:
    try:
        return selectors.parse(str(request.params.get("labelSelector") or ""))
    except selectors.SelectorError as error:
        raise ApiError(status=400, reason="BadRequest", message=str(error)) from None


def _selected(requirements: list[selectors.Requirement], obj: Mapping[str, Any]) -> bool:
    return selectors.matches(requirements, obj.get("metadata", {}).get("labels"))


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in keys}


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with an API server's write path: identity, defaulting, validation, no-op
    writes, generation, status subresources, every patch type and server-side apply
    (tests/support/apiserver), and kubectl support."""

    #: The Kubernetes minor whose schemas validate built-in kinds (the oldest supported by default:
    #: its schemas are the strictest).
    minor: str = attrs.field(factory=lambda: os.environ.get("PGQUARTZ_TEST_KUBE_MINOR", "1.30"))
    #: The newest resourceVersion given out (what a list answers with, to resume a watch from).
    _latest: int = attrs.field(default=0, init=False)
    #: The resourceVersion each object was created with, keyed like kmock's objects.
    _created: dict[Any, int] = attrs.field(factory=dict, init=False)
    #: Every request served, oldest first (kmock's own list keeps only those in flight, see _handle).
    history: list[Any] = attrs.field(factory=list, init=False)
    #: Field managers' fields per object (server-side apply), keyed like kmock's objects.
    owners: dict[Any, writes.FieldSets] = attrs.field(factory=dict, init=False)
    #: A validating admission webhook (a policy engine): the reason to deny a write, or None.
    admission: Callable[[dict[str, Any]], str | None] | None = None
    #: Writes of these kinds answer 503 (etcd timing out), this many times each, before they work.
    unavailable: dict[str, int] = attrs.field(factory=dict)
    #: When set, only requests with one of these bearer tokens are served; the others get 401, as a
    #: server answers a client whose credentials it does not know.
    tokens: frozenset[str] = attrs.field(factory=frozenset)

    def register(
        self,
        resource: str,
        *,
        kind: str,
        namespaced: bool = True,
        status: bool = False,
        short_names: tuple[str, ...] = (),
    ) -> None:
        self.resources[resource] = {
            "kind": kind,
            "singular": kind.lower(),
            "shortnames": list(short_names),
            "namespaced": namespaced,
            "verbs": VERBS,
            "subresources": ["status"] if status else [],
        }

    async def _serve_server_version(self, request: Any) -> Any:
        major, minor = self.minor.split(".")
        return {"major": major, "minor": minor, "gitVersion": f"v{self.minor}.0", "platform": "linux/amd64"}

    async def _serve_version(self, request: Any) -> Any:
        # kmock answers "/v1" for the core group; kubectl then finds no resources there.
        # It also gives subresources their resource's short names, which kubectl warns about.
        payload = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")
        for entry in payload["resources"]:
            if "/" in entry["name"]:
                entry["shortNames"] = []
        return payload

    async def _serve_list(self, request: Any) -> Any:
        # kubectl refuses a list without its kind.
        requirements = _label_selector(request)
        payload = await super()._serve_list(request)
        if requirements:
            payload["items"] = [item for item in payload["items"] if _selected(requirements, item)]
        resource = request.resource
        group_version = f"{resource.group}/{resource.version}".lstrip("/")
        payload["metadata"] = {"resourceVersion": str(self._latest)}
        return {"apiVersion": group_version, "kind": f"{self.resources[resource].kind}List", **payload}

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """A watch sees only what its label selector selects: an object whose labels change into
        the selection arrives as ADDED, one whose labels change out of it as DELETED. A watch from
        a ``resourceVersion`` (as clients start one from their list's) sees only what changed since:
        kmock streams every object as ADDED first, as a server does for a watch from no version."""
        requirements = _label_selector(request)
        since = str(request.params.get("resourceVersion") or "")
        since_version = int(since) if since.isdigit() and since != "0" else None
        selected: set[tuple[str | None, str | None]] = set()
        async for served in super()._serve_watch(request):
            if not isinstance(served, dict) or "object" not in served:
                yield served  # the stream's opening, bookmarks
                continue
            metadata = served["object"].get("metadata", {})
            key = (metadata.get("namespace"), metadata.get("name"))
            event = served
            if since_version is not None:
                resumed = self._resumed(request.resource, served, since_version)
                if resumed is not served and _selected(requirements, served["object"]):
                    selected.add(key)  # listed by the client: in its selection already
                if resumed is None:  # the client has it from its list, unchanged
                    continue
                event = resumed
            if not requirements:
                yield event
                continue
            was, now = key in selected, _selected(requirements, event["object"])
            if event.get("type") == "DELETED":
                selected.discard(key)
                if was:
                    yield event
            elif now:
                selected.add(key)
                yield event if was else {**event, "type": "ADDED"}
            elif was:
                selected.discard(key)
                yield {**event, "type": "DELETED"}

    def _resumed(self, resource: Any, event: dict[str, Any], since: int) -> dict[str, Any] | None:
        """``event`` as a watch from version ``since`` sees it: kmock's replay of an object the client
        listed and that has not changed since is None, one that changed since is MODIFIED."""
        if event.get("type") != "ADDED":
            return event
        metadata = event["object"].get("metadata", {})
        version = str(metadata.get("resourceVersion") or "")
        created = self._created.get((resource, metadata.get("namespace"), metadata.get("name")), 0)
        if not version.isdigit() or created > since:
            return event
        if int(version) <= since:
            return None
        return {**event, "type": "MODIFIED"}

    async def _serve_fetch(self, request: Any) -> Any:
        """One object by its name: looked up, as a server does (kmock scans every object it holds,
        a cost that grew with every object a benchmark created)."""
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            stored = self._objects[key] if key in self._objects else None  # noqa: SIM401 (it has no .get)
        if stored is None or stored.deleted:
            kind = str(self.resources[request.resource].kind) if request.resource in self.resources else ""
            raise _not_found(kind, request.name)
        return stored.raw

    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, ApiError):  # as a server says it: no traceback
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Failure",
                    "message": exc.message,
                    "reason": exc.reason,
                    "details": exc.details or {},
                    "code": exc.status,
                },
                status=exc.status,
            )
        return await super()._render_error(exc)

    async def _handle(self, request: Any) -> Any:
        try:
            if self.tokens and request.headers.get("Authorization", "") not in self._credentials():
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if self._is_write(request):
                return await self._write(request)
            return await super()._handle(request)
        finally:
            # kmock matches a request by scanning every request ever served, which makes a long
            # run quadratic (100 resources took 90 s): keep only those in flight there.
            self._requests[:] = [other for other in self._requests if other is not request]
            self.history.append(request)

    def _credentials(self) -> set[str]:
        return {f"{scheme} {token}" for token in self.tokens for scheme in ("Bearer", "bearer")}

    def _is_write(self, request: Any) -> bool:
        if request.resource is None or request.resource not in self.resources:
            return False
        put = request.method == enums.method.PUT and request.name is not None
        return put or request.action in (enums.action.CREATE, enums.action.UPDATE)

    async def _write(self, request: Any) -> Any:
        """Create, patch (any type), apply or replace one object, as an API server does."""
        resource = request.resource
        info = self.resources[resource]
        kind = str(info.kind)
        api_version = f"{resource.group}/{resource.version}".lstrip("/")
        content_type = str(request.headers.get("Content-Type", "")).split(";")[0].strip()
        data = request.data
        if content_type == APPLY_PATCH and data is None:
            data = yaml.safe_load(request.text)
        if self.unavailable.get(kind, 0) > 0:
            self.unavailable[kind] -= 1
            raise ApiError(503, "ServiceUnavailable", "etcdserver: request timed out")
        creating = request.action == enums.action.CREATE
        if creating and not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        namespace = request.namespace
        if creating and not namespace and info.namespaced:
            namespace = (data.get("metadata") or {}).get("namespace")
        if creating:
            data = self._named(data, lambda name: (resource, namespace, name) in self._objects)
        name = request.name if not creating else data["metadata"]["name"]
        if (
            creating
            and info.namespaced
            and (data.get("metadata") or {}).get("namespace", namespace) != namespace
        ):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        key = (resource, namespace, name)
        async with self._lock:
            stored = self._objects[key] if key in self._objects else None  # noqa: SIM401 (it has no .get)
            live = None if stored is None or stored.deleted else copy.deepcopy(stored.raw)
            if creating and live is not None:
                raise ApiError(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
            if not creating and live is None and content_type != APPLY_PATCH:
                raise _not_found(kind, name)
            owners = self.owners.setdefault(key, {}) if live is not None else {}
            manager = (
                request.params.get("fieldManager")
                or str(request.headers.get("User-Agent", "unknown")).split("/")[0]
            )
            node = schemas.root(self.minor, api_version, kind)
            if content_type == APPLY_PATCH:
                if not request.params.get("fieldManager"):
                    raise ApiError(
                        400, "BadRequest", "PATCH requests of type apply must specify a fieldManager"
                    )
                candidate = self._apply(
                    live, data, node=node, owners=owners, manager=manager, request=request
                )
            elif creating:
                candidate = data
            else:
                candidate = self._patched(live or {}, data, content_type, kind, node, request)
            new = self._stored_form(
                candidate, live, request, kind=kind, api_version=api_version, name=name, namespace=namespace
            )
            if content_type != APPLY_PATCH:
                writes.record_update(live, new, node=node, owners=owners, manager=manager)
            if live is not None and _comparable(new) == _comparable(live):
                return aiohttp.web.json_response(live)  # a no-op: no new version, no event
            self._latest += 1
            new["metadata"]["resourceVersion"] = str(self._latest)
            if live is None:
                self._created[key] = self._latest
                self.owners[key] = owners
                if stored is None:
                    self._objects[key] = new
                else:
                    stored.create(new)
                await self._buses[resource].put({"type": "ADDED", "object": new})
                return aiohttp.web.json_response(new, status=201)
            assert stored is not None
            stored.create(new)  # appends a version (kmock's patch() would merge it)
            finalized = new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers")
            await self._buses[resource].put({"type": "MODIFIED", "object": new})
            if finalized:
                stored.delete()
                self.owners.pop(key, None)
                await self._buses[resource].put({"type": "DELETED", "object": new})
            return aiohttp.web.json_response(new)

    def _named(self, data: dict[str, Any], taken: Callable[[str], bool]) -> dict[str, Any]:
        """``data`` with its name; from ``generateName`` as the API server makes one: five characters
        of its alphabet, drawn again when the name is taken (Kubernetes 1.30+ tries 8 times)."""
        metadata = dict(data.get("metadata") or {})
        if not metadata.get("name") and metadata.get("generateName"):
            for _ in range(8):
                metadata["name"] = metadata["generateName"] + "".join(random.choices(NAME_ALPHABET, k=5))
                if not taken(metadata["name"]):
                    break
        if not metadata.get("name"):
            raise ApiError(message="metadata.name: Required value: name or generateName is required")
        return {**data, "metadata": metadata}

    def _apply(
        self,
        live: dict[str, Any] | None,
        config: Any,
        *,
        node: Any,
        owners: writes.FieldSets,
        manager: str,
        request: Any,
    ) -> dict[str, Any]:
        if not isinstance(config, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        force = request.params.get("force") == "true"
        try:
            return writes.apply(live, config, node=node, owners=owners, manager=manager, force=force)
        except writes.Conflict as conflict:
            raise ApiError(409, "Conflict", str(conflict)) from None

    def _patched(
        self, live: dict[str, Any], data: Any, content_type: str, kind: str, node: Any, request: Any
    ) -> Any:
        if request.method == enums.method.PUT:
            return self._unless_stale(live, data)
        if content_type == JSON_PATCH:
            try:
                return writes.json_patch(live, data)
            except jsonpatch.JsonPatchTestFailed:
                raise ApiError(
                    message="the server rejected our request due to an error in our request"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
                raise ApiError(
                    message=f"the server rejected our request due to an error in our request: {error}"
                ) from None
        data = self._unless_stale(live, data)
        if content_type == STRATEGIC_MERGE_PATCH:
            if kind == "PgQuartzJob":
                raise ApiError(
                    415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources"
                )
            return writes.strategic_merge_patch(live, data, node)
        return writes.merge_patch(live, data)

    @staticmethod
    def _unless_stale(live: Mapping[str, Any], data: Any) -> dict[str, Any]:
        """``data`` (a whole object or a merge patch), unless it names a resourceVersion other than the
        stored one: a 409, the server's optimistic concurrency."""
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        version = (data.get("metadata") or {}).get("resourceVersion")
        if version and version != live["metadata"].get("resourceVersion"):
            raise ApiError(409, "Conflict", STALE)
        return data

    def _stored_form(
        self,
        candidate: Any,
        live: dict[str, Any] | None,
        request: Any,
        *,
        kind: str,
        api_version: str,
        name: str,
        namespace: str | None,
    ) -> dict[str, Any]:
        """The object the server would store: identity kept, status by its own subresource only,
        defaults filled in, pruned and validated (422), the generation moved by real spec changes."""
        if not isinstance(candidate, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        has_status = "status" in self.resources[request.resource].subresources
        if live is not None and has_status:
            if request.subresource == "status":  # only status changes; the rest stays as it was
                candidate = {**live, "status": candidate.get("status")}
                if candidate["status"] is None:
                    del candidate["status"]
            else:  # status is written through its subresource only
                candidate = _without(candidate, "status")
                if "status" in live:
                    candidate["status"] = live["status"]
        elif live is None and has_status and request.subresource is None:
            candidate = _without(candidate, "status")
        new = copy.deepcopy(candidate)
        new["apiVersion"], new["kind"] = api_version, kind
        metadata = new.setdefault("metadata", {}) or {}
        new["metadata"] = metadata
        previous = (live or {}).get("metadata", {})
        metadata["name"] = name
        if namespace:
            metadata["namespace"] = namespace
        metadata["uid"] = previous.get("uid") or str(uuid.uuid4())
        metadata["creationTimestamp"] = previous.get("creationTimestamp") or _now()
        for system in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if system in previous:
                metadata[system] = previous[system]
            else:
                metadata.pop(system, None)
        metadata.pop("managedFields", None)
        if kind == "Secret" and "stringData" in new:  # the API server stores only data
            encoded = {
                key: base64.b64encode(str(value).encode()).decode()
                for key, value in new.pop("stringData").items()
            }
            new["data"] = {**(new.get("data") or {}), **encoded}
        new = defaulting.default(new)
        metadata = new["metadata"]
        if kind == "PgQuartzJob":
            dropped: list[str] = []
            for section in ("spec", "status"):
                if section in new:
                    new[section], lost = validation.prune(
                        new[section], schemas.crd_schema()["properties"][section], section
                    )
                    dropped += lost
            if dropped and request.params.get("fieldValidation") == "Strict":
                raise ApiError(
                    400,
                    "BadRequest",
                    "; ".join(f'strict decoding error: unknown field "{field}"' for field in dropped),
                )
        causes = validation.validate(new, minor=self.minor)
        if causes:
            group = request.resource.group
            what = f"{kind}.{group}" if group else kind
            raise ApiError(
                message=f'{what} "{name}" is invalid: ' + ", ".join(map(str, causes[:20])),
                details={
                    "name": name,
                    "group": group,
                    "kind": kind,
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": c.message, "field": c.field}
                        for c in causes[:20]
                    ],
                },
            )
        denied = self.admission(new) if self.admission is not None else None
        if denied:
            raise ApiError(
                400, "BadRequest", f'admission webhook "policy.example.com" denied the request: {denied}'
            )
        if kind == "CustomResourceDefinition" and live is None:
            new["status"] = _established(new)  # what the apiextensions controller soon writes
        if kind in GENERATION_KINDS:
            generation = int(previous.get("generation") or 0)
            changed = live is None or _without(new, "metadata", "status") != _without(
                live, "metadata", "status"
            )
            metadata["generation"] = generation + 1 if changed else generation
        else:
            metadata.pop("generation", None)
        return new


#: What the operator reads and writes (besides namespaces and events, which kopf needs):
#: resource, kind, has a status subresource, short names.
PGQUARTZ_RESOURCES = (
    ("pgquartz.io/v1alpha1/pgquartzjobs", "PgQuartzJob", True, ("pgqj",)),
    ("v1/configmaps", "ConfigMap", False, ("cm",)),
    ("v1/secrets", "Secret", False, ()),
    ("batch/v1/cronjobs", "CronJob", True, ("cj",)),
    ("batch/v1/jobs", "Job", True, ()),
    ("v1/pods", "Pod", True, ("po",)),
    # what the PostgreSQL operators a connection's `cluster` names keep their clusters as
    ("postgresql.cnpg.io/v1/clusters", "Cluster", True, ()),
    ("acid.zalan.do/v1/postgresqls", "postgresql", True, ("pg",)),
    ("postgres-operator.crunchydata.com/v1beta1/postgresclusters", "PostgresCluster", True, ()),
)


def register_pgquartz(emulator: Emulator) -> None:
    for name, kind, status, short_names in PGQUARTZ_RESOURCES:
        emulator.register(name, kind=kind, status=status, short_names=short_names)


MAX_REQUEST = 3 * 1024 * 1024
"""The API server's limit on a request body (``MaxRequestBodyBytes``); aiohttp's own is 1 MiB."""


class _Server(aiohttp.web_server.Server):  # type: ignore[misc]
    def _make_request(self, *args: Any) -> aiohttp.web.BaseRequest:
        return aiohttp.web.BaseRequest(*args, self._loop, client_max_size=MAX_REQUEST)


class _TestServer(aiohttp.test_utils.RawTestServer):
    tls: ssl.SSLContext | None = None
    """Serve HTTPS with this (kmock starts its servers with no arguments): a subclass sets it."""

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        if self.tls is not None:
            kwargs.setdefault("ssl", self.tls)
        await super().start_server(loop=loop, **kwargs)

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
        server = _Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web.ServerRunner(server, debug=debug, **kwargs)


@contextlib.asynccontextmanager
async def running_emulator(tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[Emulator, str]]:
    """The emulator on a free port of 127.0.0.1; over HTTPS with ``tls``. Yields it and its URL."""
    server_cls = type("_TLSTestServer", (_TestServer,), {"tls": tls}) if tls is not None else _TestServer
    async with Emulator() as emulator, kmock.Server(emulator, server_cls=server_cls) as server:
        emulator.register("v1/namespaces", kind="Namespace", namespaced=False)
        emulator.register("v1/events", kind="Event")
        yield emulator, str(server.url).rstrip("/")


def settings() -> kopf.OperatorSettings:
    """kopf's bookkeeping and watch selectors as the operator keeps them."""
    return watching.configure(bookkeeping.configure(kopf.OperatorSettings()))


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
        # kopf waits 5 s for every task it did not start, then cancels it: the emulator's
        # request handlers (its watch streams) live in this loop too, and are not kopf's.
        ignored.update(task for task in asyncio.all_tasks() if _serves_http(task))
        stop.set()
        await asyncio.wait([runner], timeout=15)


def _serves_http(task: asyncio.Task[Any]) -> bool:
    return getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")


def register_chart(emulator: Emulator) -> None:
    """Also what the Helm chart installs (see tests/support/helm.py)."""
    from tests.support.helm import CHART_RESOURCES

    for name, kind, namespaced, status in CHART_RESOURCES:
        emulator.register(name, kind=kind, namespaced=namespaced, status=status)


async def _serve() -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    certificates = os.environ.get(CERTIFICATES)
    tls = None
    if certificates:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(f"{certificates}/server.crt", f"{certificates}/server.key")
    async with running_emulator(tls) as (emulator, url):
        register_pgquartz(emulator)
        register_chart(emulator)
        emulator.tokens = frozenset(filter(None, os.environ.get(TOKENS, "").split(",")))
        print(url, flush=True)
        await stop.wait()


TOKENS = "PGQUARTZ_TEST_API_TOKENS"
"""The bearer tokens an emulator process accepts (comma-separated); unset: it asks for none."""
CERTIFICATES = "PGQUARTZ_TEST_API_CERTIFICATES"
"""A folder with ``server.crt`` and ``server.key`` (tests.support.etcdcluster.make_certificates):
the emulator process serves HTTPS with them."""


@contextlib.contextmanager
def emulator_process(
    tokens: Iterable[str] = (), certificates: pathlib.Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The emulator (with the PgQuartz resources) in a child process; yields it and its URL. With
    ``tokens``, it serves only requests that carry one of them; with ``certificates``, HTTPS."""
    root = pathlib.Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": str(root), TOKENS: ",".join(tokens)}
    if certificates is not None:
        environment[CERTIFICATES] = str(certificates)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kube"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith(("http://", "https://")):
            raise RuntimeError(f"the emulator did not start (exit {process.wait()})")
        yield process, url
    finally:
        stop(process, grace=10)


def write_kubeconfig(
    url: str,
    path: pathlib.Path,
    namespace: str = "default",
    user: Mapping[str, Any] | None = None,
    ca: pathlib.Path | None = None,
) -> pathlib.Path:
    """A kubeconfig for the emulator (``user``'s credentials, by default none; ``ca`` for HTTPS) as
    kubectl and kopf read it."""
    context = {"cluster": "emulator", "user": "tester", "namespace": namespace}
    cluster = {"server": url} if ca is None else {"server": url, "certificate-authority": str(ca)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "contexts": [{"name": "emulator", "context": context}],
        "current-context": "emulator",
        "users": [{"name": "tester", "user": dict(user or {})}],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


KUBECTL = pathlib.Path(sys.executable).with_name("kubectl")
OPERATOR = pathlib.Path(sys.executable).with_name("pgquartz-operator")


@dataclasses.dataclass
class OperatorCluster:
    """The emulated API, a ``pgquartz-operator`` process logged in to it, and kubectl for both."""

    kubeconfig: pathlib.Path
    operator: subprocess.Popen[bytes]
    ports: dict[str, int]

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), *args],
            input=stdin,
            check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def get(self, *what: str) -> dict[str, Any] | None:
        """``kubectl get … -o json``, or None if it is not there."""
        done = self.kubectl("get", *what, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def eventually(self, check: Callable[[], Any], within: float = 20) -> Any:
        """Poll ``check`` until it returns something true; fail if the operator dies or time runs out."""
        deadline = time.monotonic() + within
        while True:
            value = check()
            if value:
                return value
            if self.operator.poll() is not None:
                raise RuntimeError(f"pgquartz-operator exited with {self.operator.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {within} s")
            time.sleep(0.2)


def secret_manifest(name: str, values: Mapping[str, str]) -> str:
    """A Secret for ``kubectl apply -f -``: ``kubectl create secret`` sends protobuf, which the
    emulator cannot read."""
    return json.dumps(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}
    )


@contextlib.contextmanager
def operator_cluster(
    scratch: pathlib.Path,
    *,
    namespace: str,
    environment: Mapping[str, str] | None = None,
    user: Mapping[str, Any] | None = None,
    tokens: Iterable[str] = (),
    tls: bool = False,
) -> Iterator[OperatorCluster]:
    """Start the emulator and ``pgquartz-operator`` (its log in ``scratch/operator.log``); stop both.
    ``user``: the kubeconfig's credentials; ``tokens``: the only ones the emulator accepts; ``tls``:
    HTTPS (kubectl sends credentials only over TLS: client-go reads them for TLS servers alone)."""
    certificates = None
    if tls:
        certificates = scratch / "tls"
        make_certificates(certificates)
    with emulator_process(tokens, certificates) as (_, url):
        ca = certificates / "ca.crt" if certificates is not None else None
        kubeconfig = write_kubeconfig(url, scratch / "kubeconfig", namespace=namespace, user=user, ca=ca)
        ports = {"liveness": free_port(), "metrics": free_port()}
        settings = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PGQUARTZ_LIVENESS_PORT": str(ports["liveness"]),
            "PGQUARTZ_METRICS_PORT": str(ports["metrics"]),
            **(environment or {}),
        }
        with (scratch / "operator.log").open("wb") as log:
            operator = subprocess.Popen([str(OPERATOR)], env=settings, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield OperatorCluster(kubeconfig, operator, ports)
        finally:
            stop(operator, grace=20)


if __name__ == "__main__":
    asyncio.run(_serve())
