"""The Kubernetes API calls the handlers make, with the official (synchronous) client.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read, create and replace
ConfigMaps and CronJobs (updates as JSON merge patches), Jobs for manual runs,
and the key names of referenced Secrets (RBAC ``get`` on secrets, never list or
watch; values are dropped as soon as they arrive).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes

from pgquartz.operator import resource


class KubernetesStore:
    # The client's generated models are only partly typed: the handlers speak plain dicts,
    # which the client accepts and returns through sanitize_for_serialization.
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client: Any = client
        self._core: Any = kubernetes.client.CoreV1Api(client)
        self._batch: Any = kubernetes.client.BatchV1Api(client)
        self._custom: Any = kubernetes.client.CustomObjectsApi(client)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            if kind == "ConfigMap":
                obj = self._core.read_namespaced_config_map(name, namespace)
            elif kind == "Job":
                obj = self._batch.read_namespaced_job(name, namespace)
            elif kind == resource.KIND:
                obj = self._custom.get_namespaced_custom_object(
                    resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name
                )
            else:
                obj = self._batch.read_namespaced_cron_job(name, namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        result: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return result

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The Secret's key names; its values are dropped here and never logged or kept."""
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return set(secret.data or {})

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        if kind == "ConfigMap":
            self._core.create_namespaced_config_map(namespace, dict(body))
        elif kind == "Job":
            self._batch.create_namespaced_job(namespace, dict(body))
        else:
            self._batch.create_namespaced_cron_job(namespace, dict(body))

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        if kind == "Job":
            found = self._batch.list_namespaced_job(namespace, label_selector=selector)
        else:
            found = self._core.list_namespaced_pod(namespace, label_selector=selector)
        items: list[dict[str, Any]] = self._client.sanitize_for_serialization(found).get("items", [])
        return items

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(
            resource.GROUP,
            resource.VERSION,
            namespace,
            resource.PLURAL,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A JSON merge patch (the client picks merge-patch for a dict body of a custom content type)."""
        options = {"_content_type": "application/merge-patch+json"}
        if kind == "ConfigMap":
            self._core.patch_namespaced_config_map(name, namespace, dict(body), **options)
        else:
            self._batch.patch_namespaced_cron_job(name, namespace, dict(body), **options)


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
