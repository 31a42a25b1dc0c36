"""The Kubernetes API calls the handlers make, through the official client, as kopf's login left it.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read ConfigMaps and
CronJobs and write them with server-side apply (field manager
``pgquartz-operator``, forced: the operator owns what it renders, and a field it
no longer renders is dropped by the server), create Jobs for manual runs and
Events, and read the key names of referenced Secrets (RBAC ``get`` on secrets,
never list or watch; values are dropped as soon as they arrive).

The requests go through the official client's ``ApiClient`` (its urllib3 pool,
TLS, client certificates, proxy and authentication), configured the way kopf's
``login_via_client`` configured it: in the cluster the pod's service account,
else the kubeconfig with whatever it names (an exec plugin such as ``aws eks
get-token`` or ``kubelogin``, an auth provider, client certificates, a
``proxy-url``), so the handlers act with kopf's identity. A token the client
renews (a rotated service-account token, an exec credential that expired)
reaches the next request. The bodies are the handlers' own dicts, sent as they
are to the paths below through ``ApiClient.param_serialize`` and ``call_api``:
the generated per-kind methods would first convert each one into the client's
models, and a read back out of them.

Failures come out as two kinds: :class:`Refused` (the server judged the request
and will judge it the same way again: 400, 403, 404 (:class:`Missing`, which reads
answer with None), 415, 422) and
:class:`Transient` (worth retrying: 409, 429, 5xx, no connection).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
import kubernetes.client
import urllib3

from pgquartz.operator import clusters, resource

FIELD_MANAGER = "pgquartz-operator"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_QUERY = (("fieldManager", FIELD_MANAGER), ("force", "true"))
RETRIED = {409, 429}
USER_AGENT = "pgquartz-operator"
AUTH_SETTINGS = ["BearerToken"]
"""The client's name for a token (a service account's, an exec plugin's, a kubeconfig's)."""
TIMEOUT = (10.0, 60.0)
"""Seconds to connect and to wait for an answer: a silent API server fails the call (a retry), never
holds one of kopf's handler threads for good."""

PATHS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Event": "/api/v1/namespaces/{namespace}/events",
    "Secret": "/api/v1/namespaces/{namespace}/secrets",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "CronJob": "/apis/batch/v1/namespaces/{namespace}/cronjobs",
    resource.KIND: f"/apis/{resource.GROUP}/{resource.VERSION}/namespaces/{{namespace}}/{resource.PLURAL}",
    **{kind.value: convention.path for kind, convention in clusters.CONVENTIONS.items()},
}


class Refused(Exception):
    """The API server refused a write for what it is: the same request would be refused again."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Missing(Refused):
    """A 404: what a read of something that is not there gets (reads answer None)."""


class Transient(Exception):
    """A request that failed for now: a conflict, throttling, a server error or no connection."""


def path(kind: str, *, name: bool = False, subresource: str | None = None) -> str:
    """The API path of ``kind`` objects (of one object, of its subresource), with ``{namespace}`` and
    ``{name}`` for the client to fill in, quoted."""
    text = PATHS[kind]
    if name:
        text += "/{name}"
    if subresource is not None:
        text += "/" + subresource
    return text


def failure(status: int, reason: str, data: bytes) -> Exception:
    """An answer that is not a success as :class:`Refused` (a 404 as :class:`Missing`) or
    :class:`Transient`, with the server's own reason and message where its body has them."""
    if 400 <= status < 500 and status not in RETRIED:
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or reason or "")[:1024]
        refusal = Missing if status == 404 else Refused
        return refusal(status, str(body.get("reason") or reason or ""), message)
    return Transient(f"{status} {reason}")


def with_proxy(
    info: kopf.ConnectionInfo | None, configuration: kubernetes.client.Configuration
) -> kopf.ConnectionInfo | None:
    """kopf's login through the client leaves out the kubeconfig's ``proxy-url``, which the client
    reads: kopf's own requests (watches, its status writes) then go through it too."""
    if info is None or info.proxy_url or not configuration.proxy:
        return info
    return dataclasses.replace(info, proxy_url=configuration.proxy)


class KubernetesStore:
    """The API as the handlers see it; one per process, shared by kopf's handler threads (the
    client's connection pool is theirs to share)."""

    def __init__(self, configuration: kubernetes.client.Configuration | None = None) -> None:
        self._client: kubernetes.client.ApiClient | None = None
        if configuration is not None:
            self.log_in(configuration)

    def log_in(self, configuration: kubernetes.client.Configuration) -> None:
        """Use ``configuration`` from now on (kopf logs in at start and again when the API refuses
        its token); the earlier client's connections close once no thread uses them."""
        client = kubernetes.client.ApiClient(configuration)
        client.user_agent = USER_AGENT
        self._client = client

    def close(self) -> None:
        """Close the client's connections (they are opened again when needed)."""
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]  # the client leaves it untyped

    def _call(
        self,
        method: str,
        url_path: str,
        *,
        namespace: str,
        name: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
    ) -> bytes:
        """One request; the answer's body on success, else :class:`Refused` or :class:`Transient`."""
        client = self._client
        if client is None:
            raise Transient("not logged in to the API yet")
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        where = {"namespace": namespace} if name is None else {"namespace": namespace, "name": name}
        try:
            request = client.param_serialize(
                method,
                url_path,
                path_params=where,
                query_params=list(query),
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=AUTH_SETTINGS,
            )
            answer = client.call_api(*request, _request_timeout=TIMEOUT)
            data = answer.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as error:  # what the client makes of a TLS failure
            raise Transient(f"{error.reason or error}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Transient(f"{type(error).__name__}: {error}") from error
        if not 200 <= answer.status <= 299:
            raise failure(answer.status, str(answer.reason or ""), data or b"")
        return data or b""

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            data = self._call("GET", path(kind, name=True), namespace=namespace, name=name)
        except Missing:
            return None
        found: dict[str, Any] = json.loads(data)
        return found

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The Secret's key names; its values are dropped here and never logged or kept."""
        secret = self.read("Secret", namespace, name)
        return None if secret is None else set(secret.get("data") or {})

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        self._call("POST", path(kind), namespace=namespace, body=body)

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        data = self._call("GET", path(kind), namespace=namespace, query=(("labelSelector", selector),))
        items: list[dict[str, Any]] = json.loads(data).get("items") or []
        return items

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._call(
            "PATCH",
            path(resource.KIND, name=True, subresource="status"),
            namespace=namespace,
            name=name,
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )

    def apply(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Server-side apply of the whole rendered object (creates it if it does not exist)."""
        self._call(
            "PATCH",
            path(kind, name=True),
            namespace=namespace,
            name=name,
            query=APPLY_QUERY,
            body=body,
            content_type=APPLY_PATCH,
        )
