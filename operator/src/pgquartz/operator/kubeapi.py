"""The Kubernetes API calls the handlers make, with the credentials kopf logged in with.

kopf runs synchronous handlers in a thread pool, so these blocking calls never
stall its event loop. Only what reconciliation needs: read ConfigMaps and
CronJobs and write them with server-side apply (field manager
``pgquartz-operator``, forced: the operator owns what it renders, and a field it
no longer renders is dropped by the server), create Jobs for manual runs and
Events, and read the key names of referenced Secrets (RBAC ``get`` on secrets,
never list or watch; values are dropped as soon as they arrive).

Requests are built here from paths and sent over pgquartz.operator.transport,
with the server, CA, client certificate and token of kopf's login (the pod's
service account, else the kubeconfig): the same identity as kopf's own
requests. The official client is not used: its generated API classes validated
every argument with pydantic and walked every body through a serialiser, its
urllib3 and http.client cost more CPU per request than the handlers' own work,
and importing it took 0.3 s and 20 MB of every operator's start. A service
account's token is read again whenever the kubelet has rotated its file.

Failures come out as two kinds: :class:`Refused` (the server judged the request
and will judge it the same way again: 400, 403, 404 (:class:`Missing`, which reads
answer with None), 415, 422) and
:class:`Transient` (worth retrying: 409, 429, 5xx, no connection).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from pgquartz.operator import resource, transport

FIELD_MANAGER = "pgquartz-operator"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_QUERY = (("fieldManager", FIELD_MANAGER), ("force", "true"))
RETRIED = {409, 429}
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
"""Where kopf's service-account login reads the pod's token (and the kubelet rotates it)."""
USER_AGENT = "pgquartz-operator"
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


class LoginError(kopf.LoginError):
    """Credentials the handlers cannot use: kopf logs the reason and tries the login again later."""


class _Session:
    """A transport and the headers that authenticate on it; a rotated token file is read again."""

    def __init__(self, info: kopf.ConnectionInfo, token_file: str | None) -> None:
        if info.proxy_url:
            proxy = urllib.parse.urlsplit(info.proxy_url)  # its user and password stay out of the log
            where = f"{proxy.hostname}:{proxy.port}" if proxy.port else str(proxy.hostname)
            raise LoginError(f"the kubeconfig names a proxy ({where}): pgquartz-operator connects directly")
        server = str(info.server)
        tls = info.as_ssl_context() if server.startswith("https:") else None
        endpoint = transport.Endpoint.from_url(server, tls=tls)
        self.transport = transport.Transport(endpoint, connect_timeout=TIMEOUT[0], read_timeout=TIMEOUT[1])
        self._headers = {"Accept": JSON, "User-Agent": USER_AGENT, **info.as_http_headers()}
        self._token_file = token_file
        self._token_stamp = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        if self._token_file is None:
            return None
        try:
            status = os.stat(self._token_file)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size

    def headers(self) -> dict[str, str]:
        stamp = self._stamp()
        if stamp != self._token_stamp and self._token_file is not None:
            self._token_stamp = stamp
            try:
                with open(self._token_file, encoding="utf-8") as file:
                    token = file.read().strip()
            except OSError:
                token = ""
            if token:
                self._headers = {**self._headers, "Authorization": f"Bearer {token}"}
        return dict(self._headers)


class KubernetesStore:
    """The API as the handlers see it; one per process, shared by kopf's handler threads."""

    def __init__(self, info: kopf.ConnectionInfo | None = None, *, token_file: str | None = None) -> None:
        self._session: _Session | None = None
        if info is not None:
            self.log_in(info, token_file=token_file)

    def log_in(self, info: kopf.ConnectionInfo, *, token_file: str | None = None) -> None:
        """Use ``info`` from now on (kopf logs in at start and again when the API refuses its token);
        ``token_file``: where the token is kept, to be read again when it changes."""
        self._session = _Session(info, token_file)

    def close(self) -> None:
        """Close the connections of every thread (they are opened again when needed)."""
        if self._session is not None:
            self._session.transport.close()

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
        session = self._session
        if session is None:
            raise Transient("not logged in to the API yet")
        headers = session.headers()
        if body is not None:
            headers["Content-Type"] = content_type
        if query:
            url_path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            answer = session.transport.request(method, url_path, headers, data)
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
