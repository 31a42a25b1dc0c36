"""The Kubernetes API calls the handlers make, with the official (synchronous) client's configuration.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read ConfigMaps and
CronJobs and write them with server-side apply (field manager
``pgquartz-operator``, forced: the operator owns what it renders, and a field it
no longer renders is dropped by the server), create Jobs for manual runs, and
read the key names of referenced Secrets (RBAC ``get`` on secrets, never list or
watch; values are dropped as soon as they arrive).

Requests are built here from paths, with the headers the client's ``ApiClient``
makes (its default headers and bearer token, refreshed as the client refreshes
it), but not through its generated API classes: those validate every argument
with pydantic and walk every body through their serialiser, which cost more CPU
than the rest of a reconciliation; their module alone takes half a second to
import. Answers stay plain JSON for the same reason. They travel over
pgquartz.operator.transport, with the client's server, CA and client
certificate: urllib3 and http.client cost more CPU per request than the
handlers' own work. Only when the client is configured with a proxy, or with an
``assert_hostname`` TLS check, do requests go through its urllib3 as before.

Failures come out as two kinds: :class:`Refused` (the server judged the request
and will judge it the same way again: 400, 403, 404 (:class:`Missing`, which reads
answer with None), 415, 422) and
:class:`Transient` (worth retrying: 409, 429, 5xx, no connection).
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes
import urllib3

from pgquartz.operator import resource, transport

FIELD_MANAGER = "pgquartz-operator"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_QUERY = (("fieldManager", FIELD_MANAGER), ("force", "true"))
RETRIED = {409, 429}
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


def path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """The API path of ``kind`` objects in ``namespace`` (of one object, of its subresource)."""
    text = PATHS[kind].format(namespace=urllib.parse.quote(namespace, safe=""))
    if name is not None:
        text += "/" + urllib.parse.quote(name, safe="")
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


class KubernetesStore:
    """The API as the handlers see it; one per process (the client's pool is shared by threads)."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client: Any = client  # untyped: Any, behind this typed facade
        self._transport = transport_for(client.configuration)

    def close(self) -> None:
        """Close the connections of every thread (they are opened again when needed)."""
        if self._transport is not None:
            self._transport.close()

    def _call(
        self,
        method: str,
        url_path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
    ) -> bytes:
        """One request; the answer's body on success, else :class:`Refused` or :class:`Transient`."""
        headers: dict[str, Any] = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        if query:
            url_path += "?" + urllib.parse.urlencode(query)
        method, url, headers, _, _ = self._client.param_serialize(
            method, url_path, header_params=headers, auth_settings=["BearerToken"]
        )
        if self._transport is not None:
            return self._send(method, url_path, headers, body)
        try:
            response = self._client.call_api(
                method, url, headers, None if body is None else dict(body), _request_timeout=TIMEOUT
            )
            data: bytes = response.read()  # read to the end: the connection goes back to the pool
        except (kubernetes.client.ApiException, OSError, urllib3.exceptions.HTTPError) as error:
            status = getattr(error, "status", None)
            if isinstance(error, kubernetes.client.ApiException) and isinstance(status, int) and status:
                raise failure(status, str(error.reason or ""), str(error.body or "").encode()) from error
            raise Transient(f"{type(error).__name__}: {error}") from error
        if not 200 <= response.status <= 299:
            raise failure(response.status, str(response.reason or ""), data)
        return data

    def _send(
        self, method: str, target: str, headers: dict[str, Any], body: Mapping[str, Any] | None
    ) -> bytes:
        """One request over the transport, with the headers the client made (its token, refreshed)."""
        assert self._transport is not None
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            answer = self._transport.request(method, target, headers, data)
        except OSError as error:
            raise Transient(f"{type(error).__name__}: {error}") from error
        if not 200 <= answer.status <= 299:
            raise failure(answer.status, answer.reason, answer.body)
        return answer.body

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            data = self._call("GET", path(kind, namespace, name))
        except Missing:
            return None
        found: dict[str, Any] = json.loads(data)
        return found

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The Secret's key names; its values are dropped here and never logged or kept."""
        secret = self.read("Secret", namespace, name)
        return None if secret is None else set(secret.get("data") or {})

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        self._call("POST", path(kind, namespace), body=body)

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        data = self._call("GET", path(kind, namespace), query=(("labelSelector", selector),))
        items: list[dict[str, Any]] = json.loads(data).get("items") or []
        return items

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._call(
            "PATCH",
            path(resource.KIND, namespace, name, "status"),
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )

    def apply(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Server-side apply of the whole rendered object (creates it if it does not exist)."""
        url_path = path(kind, namespace, name)
        self._call("PATCH", url_path, query=APPLY_QUERY, body=body, content_type=APPLY_PATCH)


def transport_for(configuration: Any) -> transport.Transport | None:
    """Our own transport for the client's server, CA and client certificate; None where the client's
    urllib3 must carry the requests: through a proxy, or with its ``assert_hostname`` check."""
    if getattr(configuration, "proxy", None) or isinstance(
        getattr(configuration, "assert_hostname", None), str
    ):
        return None
    host = str(configuration.host)
    tls = None
    if host.startswith("https:"):
        ca_data = getattr(configuration, "ca_cert_data", None)
        tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert, cadata=ca_data or None)
        if not configuration.verify_ssl or configuration.assert_hostname is False:
            tls.check_hostname = False
        if not configuration.verify_ssl:
            tls.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            tls.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    endpoint = transport.Endpoint.from_url(
        host, tls=tls, server_hostname=getattr(configuration, "tls_server_name", None) or None
    )
    return transport.Transport(endpoint, connect_timeout=TIMEOUT[0], read_timeout=TIMEOUT[1])


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
