"""HTTP/1.1 as the handlers' transport speaks it: framing, keep-alive, closed connections, TLS, limits."""

from __future__ import annotations

import base64
import contextlib
import pathlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import kopf
import pytest

from pgquartz.operator import kubeapi, transport
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


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x;name=value\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\nX-Trailer: t\r\n\r\n"


def client_of(url: str, *, read_timeout: float = 10.0) -> transport.Transport:
    return transport.Transport(
        transport.Endpoint.from_url(url), connect_timeout=5.0, read_timeout=read_timeout
    )


def test_requests_of_one_thread_share_one_keep_alive_connection() -> None:
    with scripted(default=ok(b'{"a":1}')) as server:
        client = client_of(server.url)
        answers = [
            client.request("GET", f"/api/v1/x{index}", {"Accept": "application/json"}) for index in range(5)
        ]
        assert answers == [transport.Answer(200, "OK", b'{"a":1}')] * 5
        assert server.paths() == [(1, b"/api/v1/x%d" % index) for index in range(5)]
        assert (
            b"\r\nHost: 127.0.0.1:%d\r\nAccept: application/json\r\n" % server.port in server.requests[0][1]
        )


def test_a_body_goes_with_its_length_and_a_chunked_answer_comes_out_whole() -> None:
    with scripted({1: [chunked(b'{"kind":', b'"CronJob"}')]}) as server:
        client = client_of(server.url)
        answer = client.request(
            "PATCH", "/apis/x?force=true", {"Content-Type": "application/json"}, b'{"b":2}'
        )
        assert answer == transport.Answer(200, "OK", b'{"kind":"CronJob"}')
        assert server.requests[0][1].endswith(b'\r\nContent-Length: 7\r\n\r\n{"b":2}')
        assert client.request("GET", "/again", {}).body == b"{}"
        assert server.paths() == [(1, b"/apis/x?force=true"), (1, b"/again")], "the trailer was read"


def test_an_answer_with_connection_close_is_the_last_on_its_connection() -> None:
    with scripted({1: [ok(b"first", b"Connection: close\r\n")]}) as server:
        client = client_of(server.url)
        assert client.request("GET", "/1", {}).body == b"first"
        server.wait_for(lambda: server.hung_up == [1])
        assert client.request("GET", "/2", {}).body == b"{}"
        assert server.paths() == [(1, b"/1"), (2, b"/2")]


def test_a_body_without_a_length_ends_with_the_connection() -> None:
    with scripted({1: [(b"HTTP/1.1 200 OK\r\n\r\nto the end", CLOSE)]}) as server:
        client = client_of(server.url)
        assert client.request("GET", "/1", {}).body == b"to the end"
        assert client.request("GET", "/2", {}).body == b"{}"
        assert server.paths() == [(1, b"/1"), (2, b"/2")]


def test_an_idle_connection_the_server_closed_is_left_and_the_request_sent_once() -> None:
    with scripted({1: [(ok(b"once"), CLOSE)]}) as server:
        client = client_of(server.url)
        assert client.request("GET", "/1", {}).body == b"once"
        server.wait_for(lambda: server.closed == [1])
        assert client.request("GET", "/2", {}).body == b"{}"
        assert server.paths() == [(1, b"/1"), (2, b"/2")]


def test_a_request_a_reused_connection_drops_unanswered_is_sent_once_more_on_a_new_one() -> None:
    with scripted({1: [ok(b"first"), CLOSE], 2: [ok(b"again")]}) as server:
        client = client_of(server.url)
        assert client.request("GET", "/1", {}).body == b"first"
        assert client.request("PATCH", "/2", {}, b"{}").body == b"again"
        assert server.paths() == [(1, b"/1"), (1, b"/2"), (2, b"/2")]


def test_a_new_connection_dropped_unanswered_is_a_failure_not_a_resend() -> None:
    with scripted({1: [CLOSE]}) as server:
        client = client_of(server.url)
        with pytest.raises(transport.ProtocolError, match="closed the connection before answering"):
            client.request("POST", "/jobs", {}, b"{}")
        assert server.paths() == [(1, b"/jobs")]


@pytest.mark.parametrize(
    "answer, problem",
    [
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", CLOSE), "closed mid-answer"),
        ((b"HTTP/1.1 200 OK\r\nContent-Type: appl", CLOSE), "closed mid-answer"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", CLOSE), "closed mid-answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n",
            "longer than its size",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x status line"),
    ],
)
def test_a_malformed_answer_is_a_protocol_error_and_its_connection_is_not_reused(
    answer: Action, problem: str
) -> None:
    with scripted({1: [answer]}) as server:
        client = client_of(server.url)
        with pytest.raises(transport.ProtocolError, match=problem):
            client.request("GET", "/1", {})
        assert client.request("GET", "/2", {}).body == b"{}"
        assert server.paths() == [(1, b"/1"), (2, b"/2")]


def test_answers_larger_than_allowed_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "MAX_BODY", 8)
    answers = [ok(b"123456789"), chunked(b"12345", b"6789"), (b"HTTP/1.1 200 OK\r\n\r\n123456789", CLOSE)]
    with scripted({number: [answer] for number, answer in enumerate(answers, 1)}) as server:
        client = client_of(server.url)
        for _ in answers:
            with pytest.raises(transport.ProtocolError, match="more than 8"):
                client.request("GET", "/big", {})
        assert server.connections == 3
    monkeypatch.setattr(transport, "MAX_LINE", 16)
    long_header = ok(b"", b"X-Long: " + b"x" * 32 + b"\r\n")
    too_long = pytest.raises(transport.ProtocolError, match="line too long")
    with scripted({1: [long_header]}) as server, too_long:
        client_of(server.url).request("GET", "/long", {})


def test_interim_answers_are_skipped_and_an_answer_without_a_body_keeps_the_connection() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    with scripted({1: [interim + ok(b"final"), b"HTTP/1.1 204 No Content\r\n\r\n"]}) as server:
        client = client_of(server.url)
        assert client.request("POST", "/1", {}, b"{}").body == b"final"
        assert client.request("DELETE", "/2", {}) == transport.Answer(204, "No Content", b"")
        assert client.request("GET", "/3", {}).body == b"{}"
        assert server.connections == 1


def test_an_unanswered_request_times_out_and_its_connection_is_closed() -> None:
    with scripted({1: [SILENT]}) as server:
        client = client_of(server.url, read_timeout=0.3)
        with pytest.raises(TimeoutError):
            client.request("GET", "/slow", {})
        server.wait_for(lambda: server.hung_up == [1])
        assert client.request("GET", "/next", {}).body == b"{}"


def test_each_thread_has_its_own_connection_and_close_closes_them_all() -> None:
    with scripted() as server:
        client = client_of(server.url)
        client.request("GET", "/main", {})
        other = threading.Thread(target=client.request, args=("GET", "/other", {}))
        other.start()
        other.join()
        client.request("GET", "/main-again", {})
        assert sorted(server.paths()) == [(1, b"/main"), (1, b"/main-again"), (2, b"/other")]
        client.close()
        server.wait_for(lambda: sorted(server.hung_up) == [1, 2])


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    with scripted() as server:
        client = client_of(server.url)
        with pytest.raises(ValueError, match="line break"):
            client.request("GET", "/x", {"Authorization": "Bearer t\r\nX-Injected: 1"})
        assert server.connections == 0


def test_the_servers_path_prefix_leads_every_request() -> None:
    with scripted() as server:
        client = client_of(server.url + "/k8s/clusters/c-1/")
        client.request("GET", "/api/v1/namespaces/db/configmaps/x", {})
        assert server.paths() == [(1, b"/k8s/clusters/c-1/api/v1/namespaces/db/configmaps/x")]


def test_an_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        transport.Endpoint.from_url("unix:///var/run/api.sock")


def test_the_store_reads_writes_and_classifies_through_the_transport() -> None:
    answers = [
        ok(b'{"kind":"ConfigMap"}'),
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 48\r\n\r\n"
        b'{"reason":"Invalid","message":"spec.x: Invalid"}',
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n",
    ]
    with scripted({1: answers}) as server:
        store = kubeapi.KubernetesStore(kopf.ConnectionInfo(server=server.url, token="secret-token"))
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
        first, _, third, fourth = (request for _, request in server.requests)
        assert b"\r\nAuthorization: Bearer secret-token\r\n" in first
        assert b"\r\nUser-Agent: pgquartz-operator\r\n" in first
        assert third.startswith(
            b"PATCH /apis/batch/v1/namespaces/db/cronjobs/x?fieldManager=pgquartz-operator&force=true "
        )
        assert b"\r\nContent-Type: application/apply-patch+yaml\r\n" in third
        assert third.endswith(b'\r\n\r\n{"kind":"CronJob"}')
        assert fourth.startswith(b"GET /apis/batch/v1/namespaces/db/jobs?labelSelector=pgquartz.io%2Fname ")
        assert server.connections == 1


def test_the_store_turns_a_dead_or_silent_server_into_a_transient_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kubeapi, "TIMEOUT", (5.0, 0.2))
    with scripted({1: [SILENT]}) as server:
        store = kubeapi.KubernetesStore(kopf.ConnectionInfo(server=server.url))
        with pytest.raises(kubeapi.Transient, match="TimeoutError"):
            store.read("ConfigMap", "db", "x")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    store = kubeapi.KubernetesStore(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
    with pytest.raises(kubeapi.Transient, match="ConnectionRefusedError"):
        store.read("ConfigMap", "db", "x")
    with pytest.raises(kubeapi.Transient, match="not logged in"):
        kubeapi.KubernetesStore().read("ConfigMap", "db", "x")


def test_a_rotated_service_account_token_is_read_again(tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    with scripted() as server:
        store = kubeapi.KubernetesStore(
            kopf.ConnectionInfo(server=server.url, token="first-token"), token_file=str(token_file)
        )
        store.read("ConfigMap", "db", "x")
        token_file.write_text("the-kubelets-new-token\n")  # the kubelet swaps the file
        store.read("ConfigMap", "db", "x")
        store.read("ConfigMap", "db", "x")
        tokens = [
            request.split(b"Authorization: Bearer ", 1)[1].split(b"\r\n", 1)[0]
            for _, request in server.requests
        ]
        assert tokens == [b"first-token", b"the-kubelets-new-token", b"the-kubelets-new-token"]


def test_a_kubeconfig_proxy_is_refused_at_login_with_a_reason_and_no_password() -> None:
    info = kopf.ConnectionInfo(server="https://api:6443", proxy_url="http://ops:s3cret@proxy:3128")
    with pytest.raises(kopf.LoginError, match="proxy") as refused:
        kubeapi.KubernetesStore(info)
    assert "proxy:3128" in str(refused.value)
    assert "s3cret" not in str(refused.value) and "ops" not in str(refused.value)


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
        info = kopf.ConnectionInfo(
            server=server.url,
            ca_path=certificates["ca"],
            certificate_path=certificates["client_cert"],
            private_key_path=certificates["client_key"],
        )
        store = kubeapi.KubernetesStore(info)
        assert store.secret_keys("db", "s") == {"k"}
        assert store.secret_keys("db", "s") == {"k"}
        assert server.connections == 1


def test_tls_with_a_kubeconfigs_inline_certificates(certificates: dict[str, str]) -> None:
    def inline(name: str) -> str:
        return base64.b64encode(pathlib.Path(certificates[name]).read_bytes()).decode()

    with scripted(tls=server_tls(certificates)) as server:
        info = kopf.ConnectionInfo(
            server=server.url,
            ca_data=inline("ca"),
            certificate_data=inline("client_cert"),
            private_key_data=inline("client_key"),
        )
        assert kubeapi.KubernetesStore(info).read("ConfigMap", "db", "x") == {}


def test_tls_refuses_a_server_its_ca_did_not_sign(certificates: dict[str, str]) -> None:
    with scripted(tls=server_tls(certificates)) as server:
        info = kopf.ConnectionInfo(
            server=server.url,
            certificate_path=certificates["client_cert"],
            private_key_path=certificates["client_key"],
        )
        store = kubeapi.KubernetesStore(info)
        with pytest.raises(kubeapi.Transient, match="CERTIFICATE_VERIFY_FAILED"):
            store.read("ConfigMap", "db", "x")


def test_tls_without_verification_when_the_kubeconfig_turns_it_off(certificates: dict[str, str]) -> None:
    with scripted(tls=server_tls(certificates)) as server:
        info = kopf.ConnectionInfo(
            server=server.url,
            insecure=True,
            certificate_path=certificates["client_cert"],
            private_key_path=certificates["client_key"],
        )
        assert kubeapi.KubernetesStore(info).read("ConfigMap", "db", "x") == {}
