"""An etcd v3 client over etcd's JSON gateway: several endpoints, TLS and user/password.

The lock needs a few of etcd's calls: a lease granted, kept alive and revoked;
a range, a put, a create-if-absent transaction and a delete; a watch for a
key's deletion. They go as JSON over HTTP/1.1 (:mod:`.wire`) on the client port
every etcd serves it on, to the members in turn: each call to the next one
(round robin, so that a paused member which keeps its connections open fails
one call, not every call), a member that refuses the connection skipped at
once, each call bounded by the client's timeout. With a :class:`Budget` set,
the calls the lock makes while getting in line are retried through a member's
failure (:mod:`pgquartz.runner.lock.retrying`). Jobs name endpoints as
``host:port`` or URLs, as PgQuartz writes them. Secrets come from files or the
environment and are never shown.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import pathlib
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from pgquartz.runner import secrets
from pgquartz.runner.lock import retrying
from pgquartz.runner.lock.errors import EtcdRefused, EtcdUnavailable
from pgquartz.runner.lock.wire import Connection, ProtocolError
from pgquartz.runner.model.job import EtcdConfig

DEFAULT_PORT = 2379
IDLE_PER_MEMBER = 2

# gRPC status codes etcd answers with that a later attempt (or another member) can get past:
# UNKNOWN, DEADLINE_EXCEEDED ("request timed out"), RESOURCE_EXHAUSTED ("too many requests"),
# INTERNAL, UNAVAILABLE ("leader changed", "no leader").
TRANSIENT_CODES = frozenset({2, 4, 8, 13, 14})
UNAUTHENTICATED = 16

T = TypeVar("T")


class Member(NamedTuple):
    """One address of an endpoint: a name with several addresses (a headless Service) is several
    members, each called in turn."""

    host: str
    """As the job names it: what TLS verifies and the Host header says."""
    port: int
    address: str
    """What is connected to."""

    def __str__(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return where if self.address == self.host else f"{where} ({self.address})"


@dataclasses.dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


@dataclasses.dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    lease: int


class TokenRejected(EtcdUnavailable):
    """etcd no longer knows our auth token (a member restarted): authenticate again."""


def parse_endpoint(endpoint: str) -> tuple[str, int, bool]:
    """``host:port``, ``host``, ``http://host:port`` or ``https://…`` → (host, port, tls)."""
    text = endpoint.strip()
    tls = text.startswith("https://")
    if "://" not in text:
        text = "//" + text
    parsed = urllib.parse.urlsplit(text)
    if not parsed.hostname:
        raise ValueError(f"not an etcd endpoint: {endpoint!r} (use host:port)")
    return parsed.hostname, parsed.port or DEFAULT_PORT, tls


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's ``range_end``)."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\0"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_value(entry: dict[str, Any]) -> KeyValue:
    """etcd's JSON leaves out zero values and writes 64-bit numbers as strings, bytes as base64."""
    return KeyValue(
        key=base64.b64decode(entry.get("key", "")),
        value=base64.b64decode(entry.get("value", "")),
        create_revision=int(entry.get("create_revision", 0)),
        lease=int(entry.get("lease", 0)),
    )


def _revision(reply: dict[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


class Client:
    """etcd's members behind one client; every call goes to the next member in turn."""

    def __init__(
        self, config: EtcdConfig, *, timeout: float = 5.0, budget: retrying.Budget | None = None
    ) -> None:
        try:
            parsed = [parse_endpoint(endpoint) for endpoint in config.endpoints]
        except ValueError as error:
            raise EtcdRefused(str(error)) from None
        if not parsed:
            raise EtcdRefused("etcdConfig names no endpoints")
        self._endpoints = [(host, port) for host, port, _ in parsed]
        self._members: list[Member] = []
        """Every address of every endpoint, resolved at the first call and again once none answers."""
        self._getaddrinfo: Callable[..., Awaitable[list[Any]]] | None = None
        self._wants_tls = config.ca_file is not None or any(tls for _, _, tls in parsed)
        self._config = config
        self._tls: ssl.SSLContext | None = None
        self._username = config.username or None
        self._password = _password(config) if self._username else None
        self._token: str | None = None
        self._turn = 0
        self._idle: dict[Member, list[Connection]] = {}
        self._closed = False
        self.timeout = timeout
        self.budget = budget
        """Retry transient errors of the lock's calls until this is spent; None: fail at once."""
        self.on_retry: Callable[[BaseException, int], None] = lambda error, attempt: None

    # -- the calls the lock makes --------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        reply = await self._retrying(lambda: self._call("/v3/lease/grant", {"TTL": ttl}))
        return Lease(id=int(reply["ID"]), ttl=int(reply.get("TTL", 0)))

    async def revoke(self, lease_id: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease_id)})

    async def keep_alive_once(self, lease_id: int, *, within: float) -> int:
        """One keep-alive of the lease, bounded by ``within``: the TTL it has again (0: it is gone)."""
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)}, within=within, stream=True)
        return int(reply.get("TTL", 0))

    async def range_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, lowest create revision first, and the store's revision."""
        request = {
            "key": _b64(prefix),
            "range_end": _b64(prefix_end(prefix)),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
        }
        reply = await self._retrying(lambda: self._call("/v3/kv/range", request))
        return [_key_value(entry) for entry in reply.get("kvs", ())], _revision(reply)

    async def create(self, key: bytes, value: bytes, *, lease: int) -> int:
        """Put ``key`` unless it exists; its create revision either way (ours, or the one found)."""
        request = {
            "compare": [{"target": "CREATE", "result": "EQUAL", "key": _b64(key), "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}],
            "failure": [{"request_range": {"key": _b64(key)}}],
        }
        reply = await self._retrying(lambda: self._call("/v3/kv/txn", request))
        if reply.get("succeeded"):
            return _revision(reply)
        [found] = reply["responses"][0]["response_range"]["kvs"]
        return int(found["create_revision"])

    async def put(self, key: bytes, value: bytes, *, lease: int) -> None:
        request = {"key": _b64(key), "value": _b64(value), "lease": str(lease)}
        await self._retrying(lambda: self._call("/v3/kv/put", request))

    async def delete(self, key: bytes) -> None:
        await self._call("/v3/kv/deleterange", {"key": _b64(key)})

    async def wait_deleted(self, key: bytes, *, after: int) -> None:
        """Return once ``key`` is deleted at a revision above ``after``, or etcd has compacted
        that history (the caller reads again); raise :class:`EtcdUnavailable` if the stream
        breaks or etcd cancels the watch."""
        connection, messages = await self._retrying(lambda: self._watch(key, after=after))
        try:
            async for line in messages:
                result = _stream_result(line)
                if result.get("canceled"):
                    if result.get("compact_revision"):
                        return  # compacted past ``after``: the caller reads the line again
                    if self._username is not None:
                        self._token = None  # "permission denied" is what an expired token gets
                    raise EtcdUnavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
                if any(event.get("type") == "DELETE" for event in result.get("events", ())):
                    return
            raise EtcdUnavailable("the etcd watch stream ended")
        except OSError as error:  # ProtocolError included
            raise EtcdUnavailable(f"the etcd watch broke: {error}") from None
        finally:
            connection.close()

    async def close(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # -- how a call travels --------------------------------------------------------------------------

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self.budget is None:
            return await operation()
        return await retrying.call(operation, budget=self.budget, on_retry=self.on_retry)

    async def _call(
        self, path: str, payload: dict[str, Any], *, within: float | None = None, stream: bool = False
    ) -> dict[str, Any]:
        """One call on the next member that takes the connection; its reply (for a streaming call,
        the first message). A token etcd has forgotten is renewed once."""
        for attempt in (1, 2):
            await self._authenticated()
            try:
                return await self._call_once(path, payload, within=within or self.timeout, stream=stream)
            except TokenRejected:
                self._token = None
                if attempt == 2 or self._username is None:
                    raise
        raise AssertionError("unreachable")

    async def _call_once(
        self, path: str, payload: dict[str, Any], *, within: float, stream: bool
    ) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        tried: list[Member] = []
        try:
            async with asyncio.timeout(within):
                status, data = await self._send(path, body, tried)
        except TimeoutError:
            raise EtcdUnavailable(
                f"etcd is unreachable (no answer within {within:.2g}s from {tried[-1] if tried else 'etcd'})"
            ) from None
        if stream and status == 200:
            return _stream_result(data.split(b"\n", 1)[0])
        return _reply(status, data, tried[-1])

    async def _send(self, path: str, body: bytes, tried: list[Member]) -> tuple[int, bytes]:
        member, connection = await self._first_connection(tried, pooled=True)
        try:
            try:
                status, data = await connection.call(path, body, self._headers())
            except OSError:  # ProtocolError included
                if not connection.from_pool:
                    raise
                # an idle connection the member has closed meanwhile: once more on a new one
                connection = await self._open(member)
                status, data = await connection.call(path, body, self._headers())
        except OSError as error:
            raise EtcdUnavailable(f"etcd is unreachable ({member}: {error})") from None
        self._put_back(member, connection)
        return status, data

    async def _first_connection(self, tried: list[Member], *, pooled: bool) -> tuple[Member, Connection]:
        """A connection to the next member that takes one (a kept-alive one if ``pooled``); a member
        that refuses is skipped at once, a certificate that does not verify refused."""
        failures: list[str] = []
        for member in await self._members_in_turn():
            tried.append(member)
            try:
                return member, await (self._connection(member) if pooled else self._open(member))
            except ssl.SSLCertVerificationError as error:
                raise EtcdRefused(
                    f"etcd member {member}: its TLS certificate: {error.verify_message}"
                ) from None
            except OSError as error:  # refused, unresolvable
                failures.append(f"{member}: {error.strerror or error}")
        self._members = []  # none took the connection: resolve the names again next time
        raise EtcdUnavailable(f"etcd is unreachable ({'; '.join(failures)})")

    async def _watch(self, key: bytes, *, after: int) -> tuple[Connection, AsyncIterator[bytes]]:
        """Open a watch for ``key``'s deletion on the next member that takes the connection."""
        await self._authenticated()
        request = {
            "create_request": {"key": _b64(key), "start_revision": str(after + 1), "filters": ["NOPUT"]}
        }
        body = json.dumps(request).encode()
        async with asyncio.timeout(self.timeout):
            member, connection = await self._first_connection([], pooled=False)
            try:
                status, messages = await connection.stream("/v3/watch", body, self._headers())
                if status != 200:
                    refusal = _error(
                        _json(b"".join([line async for line in messages])), status=status, member=member
                    )
                    if isinstance(refusal, TokenRejected):
                        self._token = None  # the retry authenticates again
                    raise refusal
            except BaseException:
                connection.close()
                raise
            return connection, messages

    async def _authenticated(self) -> None:
        """A token for the calls, when etcd wants one and we have none (yet, or any more)."""
        if self._username is not None and self._token is None:
            await self._authenticate()

    async def _authenticate(self) -> None:
        assert self._username is not None and self._password is not None
        request = {"name": self._username, "password": self._password}
        try:
            reply = await self._call_once("/v3/auth/authenticate", request, within=self.timeout, stream=False)
        except EtcdRefused as error:
            raise EtcdRefused(f"etcd authentication as {self._username!r} failed: {error}") from None
        except EtcdUnavailable as error:
            raise EtcdUnavailable(f"etcd authentication as {self._username!r} failed: {error}") from None
        self._token = str(reply.get("token", ""))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _members_in_turn(self) -> list[Member]:
        if not self._members:
            self._members = await self._resolve()
        start = self._turn % len(self._members)
        self._turn += 1
        return self._members[start:] + self._members[:start]

    async def _resolve(self) -> list[Member]:
        """Every address of every endpoint (names that do not resolve yet are left out)."""
        getaddrinfo = self._getaddrinfo or asyncio.get_running_loop().getaddrinfo
        members: list[Member] = []
        failures: list[str] = []
        for host, port in self._endpoints:
            try:
                infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as error:
                failures.append(f"{host}: {error.strerror or error}")
                continue
            members += [Member(host, port, str(info[4][0])) for info in infos]
        if not members:
            raise EtcdUnavailable(f"cannot resolve the etcd endpoints ({'; '.join(failures)})")
        return list(dict.fromkeys(members))

    async def _connection(self, member: Member) -> Connection:
        idle = self._idle.get(member)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                connection.from_pool = True
                return connection
        return await self._open(member)

    async def _open(self, member: Member) -> Connection:
        return await Connection.open(member.host, member.port, address=member.address, tls=self._context())

    def _put_back(self, member: Member, connection: Connection) -> None:
        idle = self._idle.setdefault(member, [])
        if connection.reusable and not self._closed and len(idle) < IDLE_PER_MEMBER:
            idle.append(connection)
        else:
            connection.close()

    def _context(self) -> ssl.SSLContext | None:
        if not self._wants_tls:
            return None
        if self._tls is None:
            config = self._config
            try:
                context = ssl.create_default_context(cafile=_path(config.ca_file) if config.ca_file else None)
                if config.cert_file:
                    context.load_cert_chain(
                        _path(config.cert_file), _path(config.key_file) if config.key_file else None
                    )
            except OSError as error:
                raise EtcdRefused(f"cannot read the etcd TLS files: {error}") from None
            self._tls = context
        return self._tls


def _path(name: str) -> str:
    return str(pathlib.Path(name).expanduser())


def _reply(status: int, data: bytes, member: Member) -> dict[str, Any]:
    """A unary call's reply; the error it carries raised."""
    message = _json(data)
    if status == 200 and isinstance(message, dict):
        return message
    raise _error(message, status=status, member=member)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data.strip() else {}
    except ValueError:
        return None


def _error(message: Any, *, status: int, member: Member | None = None) -> EtcdUnavailable:
    """etcd's error (gRPC code and text, as its gateway writes it) as the lock's exception."""
    code, text = None, f"HTTP status {status}"
    if isinstance(message, dict):
        detail = message.get("error", message)
        if isinstance(detail, dict):  # a streaming call's error
            code, text = detail.get("grpc_code", detail.get("code")), detail.get("message", text)
        else:
            code, text = message.get("code"), message.get("message") or str(detail or text)
    where = f"etcd member {member}" if member else "etcd"
    if code is None and status == 404:
        return EtcdRefused(
            f"{where} does not serve etcd's v3 API as JSON (HTTP 404): pgquartz needs etcd 3.4 or later"
            " with its gRPC gateway on (the default; --enable-grpc-gateway=false turns it off)"
        )
    if code == UNAUTHENTICATED and "token" in str(text):
        return TokenRejected(f"{where}: {text}")
    if code in TRANSIENT_CODES or (code is None and status >= 500):
        return EtcdUnavailable(f"{where}: {text}")
    return EtcdRefused(f"{where} refused the request: {text}")


def _stream_result(line: bytes) -> dict[str, Any]:
    """One message of a streaming reply: its result, or the error it carries raised."""
    try:
        message = json.loads(line)
    except ValueError:
        raise ProtocolError(f"not a JSON message from etcd: {line[:80]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"not a JSON message from etcd: {line[:80]!r}")
    if "error" in message:
        raise _error(message, status=200)
    result = message.get("result", {})
    return result if isinstance(result, dict) else {}


def _password(config: EtcdConfig) -> str:
    try:
        password = secrets.read(file=config.password_file, env=config.password_env, what="etcd password")
    except secrets.SecretUnavailable as error:
        raise EtcdRefused(str(error)) from None
    if password is None:
        raise EtcdRefused("an etcd username needs passwordFile or passwordEnv")
    return password
