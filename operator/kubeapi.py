"""The Kubernetes API calls the handlers make, with the official (synchronous) client.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read ConfigMaps and
CronJobs and write them with server-side apply (field manager
``pgquartz-operator``, forced: the operator owns what it renders, and a field it
no longer renders is dropped by the server), create Jobs for manual runs, and
read the key names of referenced Secrets (RBAC ``get`` on secrets, never list or
watch; values are dropped as soon as they arrive).

Failures come out as two kinds: :class:`Refused` (the server judged the request
and will judge it the same way again: 400, 403, 404 (:class:`Missing`, which reads
answer with None), 415, 422) and
:class:`Transient` (worth retrying: 409, 429, 5xx, no connection).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes
import urllib3

from pgquartz.operator import resource

FIELD_MANAGER = "pgquartz-operator"
RAW = {"_preload_content": False}
"""Responses as bytes: the handlers speak plain dicts, and turning JSON into the client's generated
models and back costs more CPU than the rest of a reconcile together."""
MERGE_PATCH = {**RAW, "_content_type": "application/merge-patch+json"}
APPLY = {
    **RAW,
    "_content_type": "application/apply-patch+yaml",
    "field_manager": FIELD_MANAGER,
    "force": True,
}
RETRIED = {409, 429}


class Refused(Exception):
    """The API server refused a write for what it is: the same request would be refused again."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Missing(Refused):
    """A 404: what a read of something that is not there gets (reads answer None)."""


class Transient(Exception):
    """A request that failed for now: a conflict, throttling, a server error or no connection."""


def _failure(error: Exception) -> Exception:
    """A client error as :class:`Refused` or :class:`Transient`."""
    status = getattr(error, "status", None)
    if isinstance(error, kubernetes.client.ApiException) and isinstance(status, int):
        if 400 <= status < 500 and status not in RETRIED:
            reason, message = _status_text(error)
            return (Missing if status == 404 else Refused)(status, reason, message)
        return Transient(f"{status} {error.reason}")
    return Transient(f"{type(error).__name__}: {error}")


def _status_text(error: Any) -> tuple[str, str]:
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    return str(body.get("reason") or error.reason or ""), str(body.get("message") or error.reason or "")[
        :1024
    ]


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)  # reading it all returns the connection to the pool
    return data


def _done(response: Any) -> None:
    """A write's answer is not needed, but must be read, or its connection never returns to the pool."""
    response.data  # noqa: B018


@contextlib.contextmanager
def _classified() -> Iterator[None]:
    """Run one call; its client errors come out as :class:`Refused` (a 404 as :class:`Missing`) or
    :class:`Transient`."""
    try:
        yield
    except (kubernetes.client.ApiException, OSError, urllib3.exceptions.HTTPError) as error:
        raise _failure(error) from error


class KubernetesStore:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        # The generated API classes are untyped: Any, behind this typed facade.
        self._core: Any = kubernetes.client.CoreV1Api(client)
        self._batch: Any = kubernetes.client.BatchV1Api(client)
        self._custom: Any = kubernetes.client.CustomObjectsApi(client)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _classified():
                response = self._read(kind, namespace, name)
        except Missing:
            return None
        return _json(response)

    def _read(self, kind: str, namespace: str, name: str) -> Any:
        if kind == "ConfigMap":
            return self._core.read_namespaced_config_map(name, namespace, **RAW)
        if kind == "Job":
            return self._batch.read_namespaced_job(name, namespace, **RAW)
        if kind == resource.KIND:
            return self._custom.get_namespaced_custom_object(
                resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name, **RAW
            )
        return self._batch.read_namespaced_cron_job(name, namespace, **RAW)

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The Secret's key names; its values are dropped here and never logged or kept."""
        try:
            with _classified():
                secret = _json(self._core.read_namespaced_secret(name, namespace, **RAW))
        except Missing:
            return None
        return set(secret.get("data") or {})

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        with _classified():
            if kind == "ConfigMap":
                _done(self._core.create_namespaced_config_map(namespace, dict(body), **RAW))
            elif kind == "Job":
                _done(self._batch.create_namespaced_job(namespace, dict(body), **RAW))
            else:
                _done(self._batch.create_namespaced_cron_job(namespace, dict(body), **RAW))

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        with _classified():
            if kind == "Job":
                response = self._batch.list_namespaced_job(namespace, label_selector=selector, **RAW)
            else:
                response = self._core.list_namespaced_pod(namespace, label_selector=selector, **RAW)
            items: list[dict[str, Any]] = _json(response).get("items", [])
            return items

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        with _classified():
            response = self._custom.patch_namespaced_custom_object_status(
                resource.GROUP,
                resource.VERSION,
                namespace,
                resource.PLURAL,
                name,
                {"status": dict(status)},
                **MERGE_PATCH,
            )
            _done(response)

    def apply(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Server-side apply of the whole rendered object (creates it if it does not exist)."""
        with _classified():
            if kind == "ConfigMap":
                _done(self._core.patch_namespaced_config_map(name, namespace, dict(body), **APPLY))
            else:
                _done(self._batch.patch_namespaced_cron_job(name, namespace, dict(body), **APPLY))


def client_for(host: str | None = None) -> kubernetes.client.ApiClient:
    """A client for ``host`` (tests), or from the pod's service account, or from ~/.kube/config."""
    if host is not None:
        configuration = kubernetes.client.Configuration()
        configuration.host = host
        return kubernetes.client.ApiClient(configuration)
    config: Any = kubernetes.config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return kubernetes.client.ApiClient()
