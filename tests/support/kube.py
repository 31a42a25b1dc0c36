"""A Kubernetes API for operator tests: kmock's emulator, made realistic enough for kopf and kubectl.

kmock's ``KubernetesEmulator`` serves discovery, list, watch, create, patch and
delete over real HTTP, but assigns no ``uid``, ``resourceVersion``,
``generation`` or ``creationTimestamp``, does not take ``metadata.namespace``
from the URL, and answers a failed JSON-patch ``test`` with 500 instead of 422.
kopf depends on all of these (its finalizer patch tests ``resourceVersion``),
so :class:`Emulator` adds them. It also fixes what keeps ``kubectl`` from
working against it (the core group's discovery, list kinds, singular and short
names), stores a Secret's ``stringData`` as ``data`` as the API server does,
and keeps a request history that does not make every request slower than the
last. :func:`running_kopf` runs a kopf registry against it with
``spawn_tasks`` + ``run_tasks`` (``kopf.operator()`` would cancel the test's
own tasks on shutdown), keeping kopf's bookkeeping under ``pgquartz.io``.

It also runs as its own process, like an API server (``python -m
tests.support.kube`` prints its URL, then serves until SIGTERM):
:func:`emulator_process` starts it, :func:`write_kubeconfig` points ``kubectl``
and ``pgquartz-operator`` at it, and :func:`operator_cluster` runs both, the
way the process tests and the demo use them.

What the emulator still does not do (so tests cannot see it): schema
validation and defaulting, ownerReference garbage collection, server-side
apply, ``dryRun``, server-side printer columns (``kubectl get`` shows names
and ages only), protobuf bodies (``kubectl create secret`` sends one: apply a
manifest instead), and resuming a watch from a ``resourceVersion``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import attrs
import jsonpatch
import kmock
import kopf
from kmock._internal import enums, k8s

from tests.support.processes import free_port, stop

VERBS = ["list", "watch", "get", "create", "patch", "update", "delete"]


@attrs.frozen
class Unprocessable(k8s.KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = "a JSON-patch test operation failed"


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with object identity, versions, namespaces from URLs, 422s and kubectl support."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    #: Every request served, oldest first (kmock's own list keeps only those in flight, see _handle).
    history: list[Any] = attrs.field(factory=list, init=False)

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
        payload = await super()._serve_list(request)
        resource = request.resource
        group_version = f"{resource.group}/{resource.version}".lstrip("/")
        return {"apiVersion": group_version, "kind": f"{self.resources[resource].kind}List", **payload}

    async def _handle(self, request: Any) -> Any:
        # The request is frozen, and kmock's matching needs the very same object: amend in place.
        if request.resource is not None:
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                # kmock keys new objects by the name in the body, so generateName must be resolved first
                object.__setattr__(request, "data", self._identify(request.data, request.namespace))
            elif request.action == enums.action.UPDATE and request.name is not None:
                object.__setattr__(request, "data", self._versioned(request))
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed:
            raise Unprocessable() from None
        finally:
            # kmock matches a request by scanning every request ever served, which makes a long
            # run quadratic (100 resources took 90 s): keep only those in flight there.
            self._requests[:] = [other for other in self._requests if other is not request]
            self.history.append(request)

    def _versioned(self, request: Any) -> Any:
        """A new resourceVersion on every write; a new generation when the spec is written."""
        bumps: dict[str, Any] = {"resourceVersion": str(next(self._versions))}
        data = request.data
        touches_spec = (isinstance(data, dict) and "spec" in data) or (
            isinstance(data, list) and any(str(op.get("path", "")).startswith("/spec") for op in data)
        )
        key = (request.resource, request.namespace, request.name)
        stored = self._objects[key] if key in self._objects else None  # noqa: SIM401 (it has no .get)
        if touches_spec and request.subresource is None and stored is not None and not stored.deleted:
            bumps["generation"] = int(stored.raw.get("metadata", {}).get("generation") or 1) + 1
        if isinstance(data, dict):
            return {**data, "metadata": {**(data.get("metadata") or {}), **bumps}}
        if isinstance(data, list):
            ops = [{"op": "add", "path": f"/metadata/{key}", "value": value} for key, value in bumps.items()]
            return [*data, *ops]
        return data

    def _identify(self, data: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        metadata = dict(data.get("metadata") or {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:8]
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata["resourceVersion"] = str(next(self._versions))
        metadata.setdefault(
            "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        metadata.setdefault("generation", 1)
        if namespace and "namespace" not in metadata:
            metadata["namespace"] = namespace
        if data.get("kind") == "Secret" and "stringData" in data:  # the API server stores only data
            data = dict(data)
            encoded = {
                key: base64.b64encode(value.encode()).decode()
                for key, value in data.pop("stringData").items()
            }
            data["data"] = {**(data.get("data") or {}), **encoded}
        return {**data, "metadata": metadata}


#: What the operator reads and writes (besides namespaces and events, which kopf needs):
#: resource, kind, has a status subresource, short names.
PGQUARTZ_RESOURCES = (
    ("pgquartz.io/v1alpha1/pgquartzjobs", "PgQuartzJob", True, ("pgqj",)),
    ("v1/configmaps", "ConfigMap", False, ("cm",)),
    ("v1/secrets", "Secret", False, ()),
    ("batch/v1/cronjobs", "CronJob", False, ("cj",)),
    ("batch/v1/jobs", "Job", True, ()),
    ("v1/pods", "Pod", True, ("po",)),
)


def register_pgquartz(emulator: Emulator) -> None:
    for name, kind, status, short_names in PGQUARTZ_RESOURCES:
        emulator.register(name, kind=kind, status=status, short_names=short_names)


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
        # kopf waits 5 s for every task it did not start, then cancels it: the emulator's
        # request handlers (its watch streams) live in this loop too, and are not kopf's.
        ignored.update(task for task in asyncio.all_tasks() if _serves_http(task))
        stop.set()
        await asyncio.wait([runner], timeout=15)


def _serves_http(task: asyncio.Task[Any]) -> bool:
    return getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")


async def _serve() -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with running_emulator() as (emulator, url):
        register_pgquartz(emulator)
        print(url, flush=True)
        await stop.wait()


@contextlib.contextmanager
def emulator_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The emulator (with the PgQuartz resources) in a child process; yields it and its URL."""
    root = pathlib.Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kube"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the emulator did not start (exit {process.wait()})")
        yield process, url
    finally:
        stop(process, grace=10)


def write_kubeconfig(url: str, path: pathlib.Path, namespace: str = "default") -> pathlib.Path:
    """A kubeconfig for the emulator (plain HTTP, no credentials) as kubectl and kopf read it."""
    context = {"cluster": "emulator", "user": "tester", "namespace": namespace}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "contexts": [{"name": "emulator", "context": context}],
        "current-context": "emulator",
        "users": [{"name": "tester", "user": {}}],
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
    scratch: pathlib.Path, *, namespace: str, environment: Mapping[str, str] | None = None
) -> Iterator[OperatorCluster]:
    """Start the emulator and ``pgquartz-operator`` (its log in ``scratch/operator.log``); stop both."""
    with emulator_process() as (_, url):
        kubeconfig = write_kubeconfig(url, scratch / "kubeconfig", namespace=namespace)
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
