"""The handlers' requests through the official client: what reaches the server, how answers are
classified, and every way a kubeconfig logs in (certificates, inline data, an exec plugin, a proxy).

The server is a scripted one (it answers each request as a test says, and records it), so that
each test sees the exact request line and headers the client sent."""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import socket
import ssl
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import kopf
import kubernetes.client
import kubernetes.config
import pytest

from pgquartz.operator import kubeapi
from tests.support.etcdcluster import make_certificates

CLOSE = "close"
"""Close the connection without answering the request just read."""
SILENT = "silent"
"""Read the request and never answer it (until the client hangs up)."""

Action = bytes | str | tuple[bytes, str]
"""What the server does with one request: answer it, CLOSE, SILENT, or answer and then CLOSE."""


class Scripted:
    """A server on 127.0.0.1 that treats the requests on its n-th connection as ``scripts[n]`` says
    (``default`` for connections without a script, and after a script's end); it records them."""

    def __init__(
        self, scripts: Mapping[int, Sequence[Action]], default: Action, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.scripts, self.default, self.tls = scripts, default, tls
        self.requests: list[tuple[int, bytes]] = []
        self.connections = 0
        self.hung_up: list[int] = []
        """Connections the client closed, in order."""
        self.closed: list[int] = []
        """Connections the server closed (CLOSE), in order."""
        self.changed = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.changed:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(client, number), daemon=True).start()

    def _note(self, seen: list[Any], item: Any) -> None:
        with self.changed:
            seen.append(item)
            self.changed.notify_all()

    def _serve(self, client: socket.socket, number: int) -> None:
        actions = iter(self.scripts.get(number, ()))
        with contextlib.suppress(OSError), contextlib.closing(client):
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            reader = client.makefile("rb")
            while True:
                request = self._request(reader)
                if request is None:
                    self._note(self.hung_up, number)
                    return
                self._note(self.requests, (number, request))
                action = next(actions, self.default)
                if isinstance(action, tuple):
                    answer, then = action
                elif isinstance(action, bytes):
                    answer, then = action, ""
                else:
                    answer, then = b"", action
                if answer:
                    client.sendall(answer)
                if then == SILENT:
                    self._request(reader)  # returns when the client hangs up
                    self._note(self.hung_up, number)
                    return
                if then == CLOSE:
                    client.close()
                    self._note(self.closed, number)
                    return

    @staticmethod
    def _request(reader: object) -> bytes | None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline()  # type: ignore[attr-defined]
            if not line:
                return None
            head += line
        length = next(
            (int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length:")), 0
        )
        return head + bytes(reader.read(length))  # type: ignore[attr-defined]

    def paths(self) -> list[tuple[int, bytes]]:
        return [(number, request.split(b" ", 2)[1]) for number, request in self.requests]


@contextlib.contextmanager
def scripted(
    scripts: Mapping[int, Sequence[Action]] | None = None,
    default: Action = b"",
    *,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Scripted]:
    server = Scripted(scripts or {}, default or ok(), tls=tls)
    try:
        yield server
    finally:
        server.listener.close()


def ok(body: bytes = b"{}", *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"".join(headers), body)


def configuration(url: str, **settings: Any) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration(host=url)
    for name, value in settings.items():
        setattr(config, name, value)
    return config


def from_kubeconfig(path: pathlib.Path) -> kubernetes.client.Configuration:
    """What kopf's login through the client leaves in the client's configuration."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(path), client_configuration=config)
    return config


def kubeconfig(path: pathlib.Path, cluster: dict[str, Any], user: dict[str, Any]) -> pathlib.Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def header(request: bytes, name: bytes) -> bytes | None:
    for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def test_the_store_reads_writes_and_classifies_through_the_client() -> None:
    answers = [
        ok(b'{"kind":"ConfigMap"}'),
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 48\r\n\r\n"
        b'{"reason":"Invalid","message":"spec.x: Invalid"}',
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n",
    ]
    with scripted({1: answers}) as server:
        store = kubeapi.KubernetesStore(
            configuration(server.url, api_key={"BearerToken": "Bearer secret-token"})
        )
        assert store.read("ConfigMap", "db", "x") == {"kind": "ConfigMap"}
        assert store.read("CronJob", "db", "gone") is None
        with pytest.raises(kubeapi.Refused) as refused:
            store.apply("CronJob", "db", "x", {"kind": "CronJob"})
        assert (refused.value.status, refused.value.reason, refused.value.message) == (
            422,
            "Invalid",
            "spec.x: Invalid",
        )
        with pytest.raises(kubeapi.Transient, match="429"):
            store.list("Job", "db", "pgquartz.io/name")
        first, second, third, fourth = (request for _, request in server.requests)
        assert first.startswith(b"GET /api/v1/namespaces/db/configmaps/x ")
        assert header(first, b"Authorization") == b"Bearer secret-token"
        assert header(first, b"User-Agent") == b"pgquartz-operator"
        assert second.startswith(b"GET /apis/batch/v1/namespaces/db/cronjobs/gone ")
        assert third.startswith(
            b"PATCH /apis/batch/v1/namespaces/db/cronjobs/x?fieldManager=pgquartz-operator&force=true "
        )
        assert header(third, b"Content-Type") == b"application/apply-patch+yaml"
        assert json.loads(third.split(b"\r\n\r\n", 1)[1]) == {"kind": "CronJob"}
        assert fourth.startswith(b"GET /apis/batch/v1/namespaces/db/jobs?labelSelector=pgquartz.io/name ")
        assert server.connections == 1  # the client's pool keeps the connection


def test_names_are_quoted_into_the_path_and_the_servers_prefix_leads_it() -> None:
    with scripted() as server:
        store = kubeapi.KubernetesStore(configuration(server.url + "/k8s/clusters/c-1"))
        store.read("ConfigMap", "db", "a/b c")
        store.patch_status("db", "nightly", {"lastRun": {"result": "Succeeded"}})
        assert server.paths() == [
            (1, b"/k8s/clusters/c-1/api/v1/namespaces/db/configmaps/a%2Fb%20c"),
            (1, b"/k8s/clusters/c-1/apis/pgquartz.io/v1alpha1/namespaces/db/pgquartzjobs/nightly/status"),
        ]
        _, status_patch = server.requests[1]
        assert header(status_patch, b"Content-Type") == b"application/merge-patch+json"


def test_the_store_turns_a_dead_or_silent_server_into_a_transient_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kubeapi, "TIMEOUT", (5.0, 0.2))
    with scripted(default=SILENT) as server:
        store = kubeapi.KubernetesStore(configuration(server.url))
        with pytest.raises(kubeapi.Transient, match="timed out"):
            store.read("ConfigMap", "db", "x")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    store = kubeapi.KubernetesStore(configuration(f"http://127.0.0.1:{port}"))
    with pytest.raises(kubeapi.Transient, match="Connection refused"):
        store.read("ConfigMap", "db", "x")
    with pytest.raises(kubeapi.Transient, match="not logged in"):
        kubeapi.KubernetesStore().read("ConfigMap", "db", "x")


def test_a_token_the_client_renews_reaches_the_next_request() -> None:
    """A rotated service-account token or an expired exec credential: the client's refresh hook
    (which its in-cluster and kubeconfig loaders install) runs before each request."""
    tokens = iter(["first-token", "the-kubelets-new-token", "the-kubelets-new-token"])

    def refresh(config: kubernetes.client.Configuration) -> None:
        config.api_key["BearerToken"] = f"Bearer {next(tokens)}"

    with scripted() as server:
        config = configuration(server.url, api_key={"BearerToken": "Bearer stale"})
        config.refresh_api_key_hook = refresh
        store = kubeapi.KubernetesStore(config)
        for _ in range(3):
            store.read("ConfigMap", "db", "x")
        sent = [header(request, b"Authorization") for _, request in server.requests]
        assert sent == [
            b"Bearer first-token",
            b"Bearer the-kubelets-new-token",
            b"Bearer the-kubelets-new-token",
        ]


def test_an_exec_plugins_token_authenticates_the_handlers(tmp_path: pathlib.Path) -> None:
    """``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``: a program that prints an
    ExecCredential. Its token is what the server sees."""
    plugin = tmp_path / "get-token"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "token-from-the-plugin", "expirationTimestamp": "2999-01-01T00:00:00Z"},
    }
    plugin.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({credential!r}))\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    with scripted() as server:
        user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}
        config = from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"server": server.url}, user))
        kubeapi.KubernetesStore(config).read("ConfigMap", "db", "x")
        [(_, request)] = server.requests
        assert header(request, b"Authorization") == b"Bearer token-from-the-plugin"


def test_a_kubeconfig_proxy_carries_the_handlers_and_kopfs_requests(tmp_path: pathlib.Path) -> None:
    with scripted() as proxy:
        cluster = {"server": "http://kube-api.invalid:6443", "proxy-url": proxy.url}
        config = from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", cluster, {"token": "t"}))
        kubeapi.KubernetesStore(config).read("ConfigMap", "db", "x")
        [(_, request)] = proxy.requests
        assert request.startswith(b"GET http://kube-api.invalid:6443/api/v1/namespaces/db/configmaps/x ")
    info = kopf.ConnectionInfo(server="http://kube-api.invalid:6443")
    assert kubeapi.with_proxy(info, config) == kopf.ConnectionInfo(
        server="http://kube-api.invalid:6443", proxy_url=proxy.url
    )
    assert kubeapi.with_proxy(info, configuration("http://kube-api.invalid:6443")) is info


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_certificates(pathlib.Path(tmp_path_factory.mktemp("tls")))


def server_tls(certificates: dict[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    context.load_verify_locations(certificates["ca"])
    context.verify_mode = ssl.CERT_REQUIRED  # as an API server asks for a client certificate
    return context


def test_tls_with_the_configured_ca_and_client_certificate(certificates: dict[str, str]) -> None:
    secret = ok(b'{"kind":"Secret","data":{"k":"dg=="}}')
    with scripted(default=secret, tls=server_tls(certificates)) as server:
        config = configuration(
            server.url,
            ssl_ca_cert=certificates["ca"],
            cert_file=certificates["client_cert"],
            key_file=certificates["client_key"],
        )
        store = kubeapi.KubernetesStore(config)
        assert store.secret_keys("db", "s") == {"k"}
        assert store.secret_keys("db", "s") == {"k"}
        assert server.connections == 1


def test_tls_with_a_kubeconfigs_inline_certificates(
    certificates: dict[str, str], tmp_path: pathlib.Path
) -> None:
    def inline(name: str) -> str:
        return base64.b64encode(pathlib.Path(certificates[name]).read_bytes()).decode()

    with scripted(tls=server_tls(certificates)) as server:
        cluster = {"server": server.url, "certificate-authority-data": inline("ca")}
        user = {"client-certificate-data": inline("client_cert"), "client-key-data": inline("client_key")}
        config = from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", cluster, user))
        assert kubeapi.KubernetesStore(config).read("ConfigMap", "db", "x") == {}


def test_tls_refuses_a_server_its_ca_did_not_sign(certificates: dict[str, str]) -> None:
    with scripted(tls=server_tls(certificates)) as server:
        config = configuration(
            server.url, cert_file=certificates["client_cert"], key_file=certificates["client_key"]
        )
        store = kubeapi.KubernetesStore(config)
        with pytest.raises(kubeapi.Transient, match="CERTIFICATE_VERIFY_FAILED"):
            store.read("ConfigMap", "db", "x")
        assert server.requests == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_without_verification_when_the_kubeconfig_turns_it_off(
    certificates: dict[str, str], tmp_path: pathlib.Path
) -> None:
    with scripted(tls=server_tls(certificates)) as server:
        cluster = {"server": server.url, "insecure-skip-tls-verify": True}
        user = {"client-certificate": certificates["client_cert"], "client-key": certificates["client_key"]}
        config = from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", cluster, user))
        assert kubeapi.KubernetesStore(config).read("ConfigMap", "db", "x") == {}
