"""The Kubernetes API calls the handlers make, with the official (synchronous) client.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read, create and replace
ConfigMaps and CronJobs (updates as JSON merge patches), and Jobs for manual runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes


class KubernetesStore:
    # The client's generated models are only partly typed: the handlers speak plain dicts,
    # which the client accepts and returns through sanitize_for_serialization.
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client: Any = client
        self._core: Any = kubernetes.client.CoreV1Api(client)
        self._batch: Any = kubernetes.client.BatchV1Api(client)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            if kind == "ConfigMap":
                obj = self._core.read_namespaced_config_map(name, namespace)
            elif kind == "Job":
                obj = self._batch.read_namespaced_job(name, namespace)
            else:
                obj = self._batch.read_namespaced_cron_job(name, namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        result: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return result

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        if kind == "ConfigMap":
            self._core.create_namespaced_config_map(namespace, dict(body))
        elif kind == "Job":
            self._batch.create_namespaced_job(namespace, dict(body))
        else:
            self._batch.create_namespaced_cron_job(namespace, dict(body))

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
