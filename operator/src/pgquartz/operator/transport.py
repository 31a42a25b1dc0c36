"""HTTP/1.1 to the API server for the handlers' requests: one keep-alive connection per handler thread.

A new PgQuartzJob costs the handlers four API requests (two reads, two applies).
Sent through the official client, each had gone through urllib3 and http.client,
whose header parsing runs the email package: about a fifth of the operator's CPU
per resource, more than rendering and checking the job file. The API server
answers every request the handlers make with one JSON body, so this module
speaks only that part of HTTP/1.1: one request at a time per connection,
``Content-Length`` and chunked bodies, keep-alive, TLS with the configured CA
and client certificate. What to send (the server, its CA, the token, the
headers) comes from kopf's login (pgquartz.operator.kubeapi); proxies are not
spoken.

Connections belong to threads (kopf runs synchronous handlers in a pool), so no
lock is taken per request. A connection is reused only after a whole answer was
read from it; any failure or interruption closes it. An idle connection the
server has closed is noticed before it is reused, and a request whose connection
turns out to be closed before any byte of the answer arrived is sent once more
on a new one, as urllib3 does: the handlers' writes are applies and creates of
named objects, which a second delivery cannot duplicate.
"""

from __future__ import annotations

import io
import select
import socket
import ssl
import threading
import urllib.parse
import weakref
from collections.abc import Mapping
from typing import NamedTuple, cast

MAX_BODY = 256 * 1024 * 1024
"""Refuse an answer larger than this (the handlers read single objects and labelled lists)."""

MAX_LINE = 64 * 1024
"""Refuse a status line, header line or chunk-size line longer than this."""

MAX_HEADERS = 256

NO_BODY = frozenset({204, 304})


class ProtocolError(ConnectionError):
    """The answer is not HTTP/1.1 as expected, too large, or the connection broke in the middle of it."""


class _Closed(ProtocolError):
    """The connection was closed before any byte of the answer arrived."""


class Answer(NamedTuple):
    status: int
    reason: str
    body: bytes


class _Head(NamedTuple):
    status: int
    reason: str
    length: int | None
    chunked: bool
    keep_alive: bool


class Endpoint(NamedTuple):
    """Where the API server is and how to talk to it, from a URL such as ``https://10.0.0.1:6443``."""

    host: str
    port: int
    base_path: str
    tls: ssl.SSLContext | None
    server_hostname: str | None

    @classmethod
    def from_url(cls, url: str, *, tls: ssl.SSLContext | None = None) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL of an API server: {url!r}")
        secure = parts.scheme == "https"
        if secure and tls is None:
            tls = ssl.create_default_context()
        return cls(
            host=parts.hostname,
            port=parts.port or (443 if secure else 80),
            base_path=parts.path.rstrip("/"),
            tls=tls if secure else None,
            server_hostname=parts.hostname if secure else None,
        )

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls is not None else 80
        return host if self.port == default else f"{host}:{self.port}"


class _Connection:
    """One TCP (or TLS) connection, one request at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._reader = cast(io.BufferedReader, sock.makefile("rb", buffering=65536))
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    @classmethod
    def open(cls, endpoint: Endpoint, connect_timeout: float, read_timeout: float) -> _Connection:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls is not None:
                sock = endpoint.tls.wrap_socket(sock, server_hostname=endpoint.server_hostname)
            sock.settimeout(read_timeout)
            return cls(sock)
        except BaseException:
            sock.close()
            raise

    def dropped(self) -> bool:
        """Whether the idle connection was closed by the server (or holds bytes nobody asked for)."""
        return bool(self._poll.poll(0))

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._socket.close()

    def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send ``request``, read the whole answer; whether the connection can take another one."""
        try:
            self._socket.sendall(request)
            first = self._reader.readline(MAX_LINE + 1)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise _Closed(str(error)) from error
        if not first:
            raise _Closed("the server closed the connection before answering")
        head = self._head(first)
        while 100 <= head.status < 200:  # an interim answer: the real one follows
            head = self._head(self._line())
        body = b"" if head.status in NO_BODY else self._body(head)
        return Answer(head.status, head.reason, body), head.keep_alive

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if not line.endswith(b"\n"):
            raise ProtocolError("line too long" if len(line) > MAX_LINE else "connection closed mid-answer")
        return line

    def _head(self, status_line: bytes) -> _Head:
        if not status_line.endswith(b"\n"):
            raise ProtocolError("status line too long or cut off")
        version, _, rest = status_line.rstrip(b"\r\n").partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not code.isdigit() or len(code) != 3:
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        length: int | None = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = line.partition(b":")
            if not colon:
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                if not chunked:
                    raise ProtocolError(f"unsupported Transfer-Encoding: {value[:40]!r}")
            elif name == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        else:
            raise ProtocolError("too many header lines")
        status = int(code)
        if chunked:
            length = None
        elif length is None and status not in NO_BODY and status >= 200:
            keep_alive = False  # the body ends when the server closes the connection
        if length is not None and length > MAX_BODY:
            raise ProtocolError(f"an answer of {length} bytes is more than {MAX_BODY} allowed")
        return _Head(status, reason.decode("latin-1"), length, chunked, keep_alive)

    def _exactly(self, size: int) -> bytes:
        data = self._reader.read(size)
        if len(data) != size:
            raise ProtocolError("connection closed mid-answer")
        return data

    def _body(self, head: _Head) -> bytes:
        if head.length is not None:
            return self._exactly(head.length)
        if not head.chunked:
            data = self._reader.read(MAX_BODY + 1)
            if len(data) > MAX_BODY:
                raise ProtocolError(f"an answer of more than {MAX_BODY} bytes")
            return data
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_line[:40]!r}") from None
            if size < 0:
                raise ProtocolError(f"bad chunk size: {size_line[:40]!r}")
            if size == 0:
                while self._line() not in (b"\r\n", b"\n"):  # trailers, if any
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ProtocolError(f"an answer of more than {MAX_BODY} bytes")
            parts.append(self._exactly(size))
            if self._line() not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk is longer than its size")


class Transport:
    """Requests to one API server; each thread has its own keep-alive connection."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float, read_timeout: float) -> None:
        self.endpoint = endpoint
        self._timeouts = (connect_timeout, read_timeout)
        self._local = threading.local()
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        """Every thread's connection, to close them all; a finished thread's goes with it."""
        self._open_lock = threading.Lock()

    def _connect(self) -> _Connection:
        connection = _Connection.open(self.endpoint, *self._timeouts)
        with self._open_lock:
            self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        with self._open_lock:
            self._open.discard(connection)
        connection.close()

    def _idle(self) -> _Connection | None:
        connection: _Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None and connection.dropped():
            self._discard(connection)
            return None
        return connection

    def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Answer:
        """Send one request for ``target`` (a path with its query) and read its whole answer.

        Raises OSError (``ProtocolError``, timeouts, refused connections, TLS failures)."""
        message = self._message(method, target, headers, body)
        connection = self._idle()
        reused = connection is not None
        if connection is None:
            connection = self._connect()
        try:
            try:
                answer, reusable = connection.exchange(message)
            except _Closed:
                if not reused:
                    raise
                self._discard(connection)  # closed while idle, just before we wrote: once more
                connection = self._connect()
                answer, reusable = connection.exchange(message)
        except BaseException:
            self._discard(connection)
            raise
        if reusable:
            self._local.connection = connection
        else:
            self._discard(connection)
        return answer

    def _message(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {self.endpoint.base_path}{target} HTTP/1.1", f"Host: {self.endpoint.authority}"]
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "connection", "transfer-encoding"):
                continue
            text = f"{name}: {value}"
            if "\r" in text or "\n" in text:
                raise ValueError(f"a line break in the header {name!r}")
            lines.append(text)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def close(self) -> None:
        """Close every connection (of every thread)."""
        with self._open_lock:
            connections, self._open = list(self._open), weakref.WeakSet()
        for connection in connections:
            connection.close()
