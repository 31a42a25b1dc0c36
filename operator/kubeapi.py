"""The Kubernetes API calls the handlers make, with the official (synchronous) client.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read, create and replace
ConfigMaps and CronJobs (updates as JSON merge patches), Jobs for manual runs,
and the key names of referenced Secrets (RBAC ``get`` on secrets, never list or
watch; values are dropped as soon as they arrive).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kubernetes

from pgquartz.operator import resource

RAW = {"_preload_content": False}
"""Responses as bytes: the handlers speak plain dicts, and turning JSON into the client's generated
models and back costs more CPU than the rest of a reconcile together."""
MERGE_PATCH = {**RAW, "_content_type": "application/merge-patch+json"}


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)  # reading it all returns the connection to the pool
    return data


def _done(response: Any) -> None:
    """A write's answer is not needed, but must be read, or its connection never returns to the pool."""
    response.data  # noqa: B018


class KubernetesStore:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        # The generated API classes are untyped: Any, behind this typed facade.
        self._core: Any = kubernetes.client.CoreV1Api(client)
        self._batch: Any = kubernetes.client.BatchV1Api(client)
        self._custom: Any = kubernetes.client.CustomObjectsApi(client)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            if kind == "ConfigMap":
                response = self._core.read_namespaced_config_map(name, namespace, **RAW)
            elif kind == "Job":
                response = self._batch.read_namespaced_job(name, namespace, **RAW)
            elif kind == resource.KIND:
                response = self._custom.get_namespaced_custom_object(
                    resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name, **RAW
                )
            else:
                response = self._batch.read_namespaced_cron_job(name, namespace, **RAW)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The Secret's key names; its values are dropped here and never logged or kept."""
        try:
            secret = _json(self._core.read_namespaced_secret(name, namespace, **RAW))
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return set(secret.get("data") or {})

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        if kind == "ConfigMap":
            _done(self._core.create_namespaced_config_map(namespace, dict(body), **RAW))
        elif kind == "Job":
            _done(self._batch.create_namespaced_job(namespace, dict(body), **RAW))
        else:
            _done(self._batch.create_namespaced_cron_job(namespace, dict(body), **RAW))

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        if kind == "Job":
            response = self._batch.list_namespaced_job(namespace, label_selector=selector, **RAW)
        else:
            response = self._core.list_namespaced_pod(namespace, label_selector=selector, **RAW)
        items: list[dict[str, Any]] = _json(response).get("items", [])
        return items

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
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

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A JSON merge patch."""
        if kind == "ConfigMap":
            _done(self._core.patch_namespaced_config_map(name, namespace, dict(body), **MERGE_PATCH))
        else:
            _done(self._batch.patch_namespaced_cron_job(name, namespace, dict(body), **MERGE_PATCH))


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
