"""The etcd v3 calls the lock makes, on etcd's gRPC API: aetcd's messages and stubs over grpcio.

The lock needs a few of etcd's calls: a lease granted, kept alive and revoked;
a range, a put, a create-if-absent transaction and a delete; a watch for a
key's deletion. They are etcd's own gRPC API, as aetcd generates it
(:mod:`aetcd.rpc`: the protobuf messages and the service stubs), on grpcio's
asyncio channels. aetcd's ``Client`` itself is not used: in 1.0 it takes one
``host:port``, opens only insecure channels (TLS is an open pull request) and
puts one timeout on every call, where the lock needs every member, TLS with
client certificates, and a deadline of its own for each call (a keep-alive
must give up long before a watch does).

So each endpoint of the job gets a channel of its own (``dns:///host:port``,
``round_robin`` over every address the name has: a headless Service's pods,
keep-alive pings on open streams, reconnection within a second), and each call
goes to the next endpoint in turn, so that a paused member which keeps its
connections open fails one call, not every call. An endpoint that refuses the
connection (or has no leader) is skipped at once, within the call's deadline;
one whose connection has already failed is tried last. With a :class:`Budget`
set, the calls the lock makes while getting in line are retried through a
member's failure (:mod:`pgquartz.runner.lock.retrying`). Jobs name endpoints as
``host:port`` or URLs, as PgQuartz writes them. Secrets come from files or the
environment and are never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from pgquartz.runner import secrets
from pgquartz.runner.lock import retrying
from pgquartz.runner.lock.errors import EtcdRefused, EtcdUnavailable
from pgquartz.runner.model.job import EtcdConfig


@contextlib.contextmanager
def _unless_set(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment for the block, unless the user has set it already; the
    commands the runner starts later do not inherit it."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


# gRPC's core writes its own lines to stderr (a failed TLS handshake, a refused connection), beside
# the runner's report, which says the same; it reads its verbosity once, when it is imported.
with _unless_set("GRPC_VERBOSITY", "NONE"):
    import grpc
    import grpc.aio
    from aetcd import rpc

DEFAULT_PORT = 2379
HANDSHAKE_TIMEOUT_MS = 5_000

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    # every address of a name (a headless Service: one per member), each call to the next ready one
    ("grpc.lb_policy_name", "round_robin"),
    # pings while a stream (a watch) is open: a member gone silently is noticed within 15 s; etcd
    # refuses pings more often than every 5 s (--grpc-keepalive-min-time) and those without a stream
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # a member that restarts is used again within a second, not after gRPC's default of up to 2 min
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # what gRPC takes for the handshake's timeout (20 s by default), which also bounds how long a
    # connection to a silent member outlives a closed channel; no call of the lock waits longer
    ("grpc.min_reconnect_backoff_ms", HANDSHAKE_TIMEOUT_MS),
    ("grpc.dns_min_time_between_resolutions_ms", 1_000),
)

# gRPC status codes etcd answers with that a later attempt (or another member) can get past.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,  # "request timed out"
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # "too many requests"
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,  # "leader changed", "no leader", a connection refused
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One endpoint as the job names it: what TLS verifies and gRPC resolves."""

    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    """etcd no longer knows our auth token (a member restarted, the token expired): authenticate again."""


class Unreachable(EtcdUnavailable):
    """The member did not take the call at all (refused, unresolvable, no leader): try the next one."""


def parse_endpoint(endpoint: str) -> Endpoint:
    """``host:port``, ``host``, ``http://host:port`` or ``https://…``."""
    text = endpoint.strip()
    tls = text.startswith("https://")
    if "://" not in text:
        text = "//" + text
    parsed = urllib.parse.urlsplit(text)
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        port = 0
    if not parsed.hostname or not port:
        raise ValueError(f"not an etcd endpoint: {endpoint!r} (use host:port)")
    return Endpoint(parsed.hostname, port, tls)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's ``range_end``)."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\0"


def _key_value(message: Any) -> KeyValue:
    return KeyValue(
        key=bytes(message.key),
        value=bytes(message.value),
        create_revision=int(message.create_revision),
        lease=int(message.lease),
    )


@dataclasses.dataclass
class _Member:
    """An endpoint's channel and the stubs of etcd's services on it."""

    endpoint: Endpoint
    channel: grpc.aio.Channel
    kv: Any
    lease: Any
    watch: Any
    auth: Any

    def failing(self) -> bool:
        """Its connection failed and gRPC is waiting to reconnect: worth trying only last."""
        state = self.channel.get_state(try_to_connect=False)
        return state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


class Client:
    """etcd's members behind one client; every call goes to the next member in turn."""

    def __init__(
        self, config: EtcdConfig, *, timeout: float = 5.0, budget: retrying.Budget | None = None
    ) -> None:
        try:
            self._endpoints = list(dict.fromkeys(parse_endpoint(endpoint) for endpoint in config.endpoints))
        except ValueError as error:
            raise EtcdRefused(str(error)) from None
        if not self._endpoints:
            raise EtcdRefused("etcdConfig names no endpoints")
        self._config = config
        self._wants_tls = config.ca_file is not None or any(endpoint.tls for endpoint in self._endpoints)
        self._credentials: grpc.ChannelCredentials | None = None
        self._members: list[_Member] = []
        """One per endpoint, made at the first call (a channel belongs to the running loop)."""
        self._username = config.username or None
        self._password = _password(config) if self._username else None
        self._token: str | None = None
        self._turn = 0
        self.timeout = timeout
        self.budget = budget
        """Retry transient errors of the lock's calls until this is spent; None: fail at once."""
        self.on_retry: Callable[[BaseException, int], None] = lambda error, attempt: None

    # -- the calls the lock makes --------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        request = rpc.LeaseGrantRequest(TTL=ttl, ID=0)
        reply = await self._retrying(lambda: self._call(lambda m: m.lease.LeaseGrant, request))
        return Lease(id=int(reply.ID), ttl=int(reply.TTL))

    async def revoke(self, lease_id: int) -> None:
        await self._call(lambda m: m.lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id))

    async def keep_alive_once(self, lease_id: int, *, within: float) -> int:
        """One keep-alive of the lease, bounded by ``within``: the TTL it has again (0: it is gone)."""

        async def refresh(member: _Member, seconds: float) -> int:
            request = rpc.LeaseKeepAliveRequest(ID=lease_id)
            call = member.lease.LeaseKeepAlive([request], timeout=seconds, metadata=self._metadata())
            try:
                reply = await call.read()
            finally:
                call.cancel()
            if reply is grpc.aio.EOF:
                raise EtcdUnavailable(f"etcd member {member.endpoint} ended the lease keep-alive")
            return int(reply.TTL)

        return await self._authorised(lambda: self._on_a_member(refresh, within=within))

    async def range_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, lowest create revision first, and the store's revision."""
        request = rpc.RangeRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
        )
        reply = await self._retrying(lambda: self._call(lambda m: m.kv.Range, request))
        return [_key_value(kv) for kv in reply.kvs], int(reply.header.revision)

    async def create(self, key: bytes, value: bytes, *, lease: int) -> int:
        """Put ``key`` unless it exists; its create revision either way (ours, or the one found)."""
        return (await self._create(key, value, lease=lease)).create_revision

    async def claim(self, key: bytes, value: bytes, *, lease: int) -> bool:
        """Put ``key`` unless it exists; whether it is ours now (made, or found with our lease: a
        retry of a claim whose answer was lost)."""
        return (await self._create(key, value, lease=lease)).lease == lease

    async def _create(self, key: bytes, value: bytes, *, lease: int) -> KeyValue:
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key, create_revision=0)
            ],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        reply = await self._retrying(lambda: self._call(lambda m: m.kv.Txn, request))
        if reply.succeeded:
            return KeyValue(key=key, value=value, create_revision=int(reply.header.revision), lease=lease)
        [found] = reply.responses[0].response_range.kvs
        return _key_value(found)

    async def put(self, key: bytes, value: bytes, *, lease: int) -> None:
        request = rpc.PutRequest(key=key, value=value, lease=lease)
        await self._retrying(lambda: self._call(lambda m: m.kv.Put, request))

    async def delete(self, key: bytes) -> None:
        await self._call(lambda m: m.kv.DeleteRange, rpc.DeleteRangeRequest(key=key))

    async def wait_deleted(self, key: bytes, *, after: int, prefix: bool = False) -> None:
        """Return once ``key`` (with ``prefix``: any key under it) is deleted at a revision above
        ``after``, or etcd has compacted that history (the caller reads again); raise
        :class:`EtcdUnavailable` if the stream breaks or etcd cancels the watch. The watch is
        cancelled on the member when this returns."""
        range_end = prefix_end(key) if prefix else b""
        member, call = await self._retrying(
            lambda: self._authorised(lambda: self._watch(key, after=after, range_end=range_end))
        )
        try:
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    raise EtcdUnavailable(f"etcd member {member.endpoint} ended the watch stream")
                if reply.canceled:
                    if reply.compact_revision:
                        return  # compacted past ``after``: the caller reads the line again
                    raise self._watch_refused(reply)
                if any(event.type == rpc.Event.DELETE for event in reply.events):
                    return
        except grpc.aio.AioRpcError as error:
            raise EtcdUnavailable(f"the etcd watch on {member.endpoint} broke: {_details(error)}") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close every channel: calls still open on them (a watch, a keep-alive) end at once."""
        members, self._members = self._members, []
        for member in members:
            await member.channel.close(grace=None)

    # -- how a call travels --------------------------------------------------------------------------

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self.budget is None:
            return await operation()
        return await retrying.call(operation, budget=self.budget, on_retry=self.on_retry)

    async def _call(self, method: Callable[[_Member], Any], request: Any) -> Any:
        """One unary call of etcd's: ``method`` picks it from a member's stubs."""

        async def once(member: _Member, seconds: float) -> Any:
            return await method(member)(request, timeout=seconds, metadata=self._metadata())

        return await self._authorised(lambda: self._on_a_member(once, within=self.timeout))

    async def _authorised(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation`` with a token, when etcd wants one; a token etcd has forgotten renewed once."""
        for attempt in (1, 2):
            if self._username is not None and self._token is None:
                await self._authenticate()
            try:
                return await operation()
            except TokenRejected:
                self._token = None
                if attempt == 2 or self._username is None:
                    raise
        raise AssertionError("unreachable")

    async def _on_a_member(self, operation: Callable[[_Member, float], Awaitable[T]], *, within: float) -> T:
        """``operation`` on the next member in turn, then on the others while each refuses, all
        within one deadline; etcd's error as the lock's exception."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        refusals: list[str] = []
        for member in self._in_turn():
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                return await operation(member, left)
            except grpc.aio.AioRpcError as error:
                problem = _error(error, member.endpoint, within=within)
                if not isinstance(problem, Unreachable):
                    raise problem from None
                refusals.append(str(problem))
        raise EtcdUnavailable(
            f"etcd is unreachable ({'; '.join(refusals) or f'nothing within {within:.2g}s'})"
        )

    async def _watch(self, key: bytes, *, after: int, range_end: bytes) -> tuple[_Member, Any]:
        """A watch for the deletion of ``key`` (up to ``range_end``), created on the next member that
        takes it."""
        request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=key,
                range_end=range_end,
                start_revision=after + 1,
                filters=[rpc.WatchCreateRequest.NOPUT],
            )
        )

        async def create(member: _Member, seconds: float) -> tuple[_Member, Any]:
            # "hasleader": a member cut off from the others refuses the watch instead of keeping it
            # quiet for ever (what etcd's Go client asks for too)
            call = member.watch.Watch(metadata=(*self._metadata(), ("hasleader", "true")))
            try:
                await asyncio.wait_for(call.write(request), seconds)
                created = await asyncio.wait_for(call.read(), seconds)
            except TimeoutError:
                call.cancel()
                raise EtcdUnavailable(
                    f"etcd is unreachable (no answer within {self.timeout:.2g}s from {member.endpoint})"
                ) from None
            except BaseException:
                call.cancel()
                raise
            if created is grpc.aio.EOF:
                call.cancel()
                raise EtcdUnavailable(f"etcd member {member.endpoint} ended the watch stream")
            if created.canceled and not created.compact_revision:
                call.cancel()
                raise self._watch_refused(created)
            return member, call

        return await self._on_a_member(create, within=self.timeout)

    def _watch_refused(self, reply: Any) -> EtcdUnavailable:
        if self._username is not None:
            self._token = None  # "permission denied" is what an expired token gets
        return EtcdUnavailable(f"etcd cancelled the watch: {reply.cancel_reason}")

    async def _authenticate(self) -> None:
        assert self._username is not None and self._password is not None
        request = rpc.AuthenticateRequest(name=self._username, password=self._password)

        async def authenticate(member: _Member, seconds: float) -> Any:
            return await member.auth.Authenticate(request, timeout=seconds)

        try:
            reply = await self._on_a_member(authenticate, within=self.timeout)
        except EtcdRefused as error:
            raise EtcdRefused(f"etcd authentication as {self._username!r} failed: {error}") from None
        except EtcdUnavailable as error:
            raise EtcdUnavailable(f"etcd authentication as {self._username!r} failed: {error}") from None
        self._token = str(reply.token)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("token", self._token),) if self._token else ()

    def _in_turn(self) -> list[_Member]:
        """Every member, starting with the next one in turn; those whose connection failed last."""
        if not self._members:
            self._members = [self._connect(endpoint) for endpoint in self._endpoints]
        start = self._turn % len(self._members)
        self._turn += 1
        in_turn = self._members[start:] + self._members[:start]
        return sorted(in_turn, key=_Member.failing)

    def _connect(self, endpoint: Endpoint) -> _Member:
        target = f"dns:///{endpoint}"
        if self._wants_tls:
            channel = grpc.aio.secure_channel(target, self._tls(), options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return _Member(
            endpoint,
            channel,
            kv=rpc.KVStub(channel),
            lease=rpc.LeaseStub(channel),
            watch=rpc.WatchStub(channel),
            auth=rpc.AuthStub(channel),
        )

    def _tls(self) -> grpc.ChannelCredentials:
        if self._credentials is None:
            config = self._config
            try:
                self._credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(config.ca_file) if config.ca_file else None,
                    private_key=_read(config.key_file) if config.key_file else None,
                    certificate_chain=_read(config.cert_file) if config.cert_file else None,
                )
            except OSError as error:
                raise EtcdRefused(f"cannot read the etcd TLS files: {error}") from None
        return self._credentials


def _read(name: str) -> bytes:
    return pathlib.Path(name).expanduser().read_bytes()


def _details(error: grpc.aio.AioRpcError) -> str:
    return str(error.details() or error.code().name)


def _error(error: grpc.aio.AioRpcError, endpoint: Endpoint, *, within: float) -> EtcdUnavailable:
    """etcd's error (a gRPC status and etcd's text) as the lock's exception."""
    code, text = error.code(), _details(error)
    where = f"etcd member {endpoint}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EtcdUnavailable(f"etcd is unreachable (no answer within {within:.2g}s from {endpoint})")
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return EtcdRefused(f"{where}: its TLS certificate does not verify ({text})")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unreachable(f"{endpoint}: {text}")
    if code == grpc.StatusCode.UNAUTHENTICATED and "token" in text:
        return TokenRejected(f"{where}: {text}")
    if code in TRANSIENT_CODES:
        return EtcdUnavailable(f"{where}: {text}")
    return EtcdRefused(f"{where} refused the request: {text}")


def _password(config: EtcdConfig) -> str:
    try:
        password = secrets.read(file=config.password_file, env=config.password_env, what="etcd password")
    except secrets.SecretUnavailable as error:
        raise EtcdRefused(str(error)) from None
    if password is None:
        raise EtcdRefused("an etcd username needs passwordFile or passwordEnv")
    return password
