"""An etcd v3 client (aetcd) that knows several endpoints, TLS and user/password.

aetcd connects to one ``host:port`` over plaintext. Jobs name several
endpoints (``host:port`` or URLs, as PgQuartz writes them) and secured clusters
need TLS and credentials, so :func:`connect` builds the gRPC channel itself:
every endpoint resolved to an address in one ``ipv4:``/``ipv6:`` target (gRPC
then fails over between members by itself), TLS when a CA file is given.
Secrets come from files or the environment and are never shown.

The channel balances calls round-robin over the members (gRPC's default,
pick-first, sticks to one member: a paused member that keeps its TCP connection
open then fails every call until the deadline), and with a :class:`Budget` set
the calls the lock makes while getting in line are retried through a member's
failure (:mod:`pgquartz.runner.lock.retrying`).
"""

from __future__ import annotations

import pathlib
import socket
import urllib.parse
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

from pgquartz.runner import secrets
from pgquartz.runner.lock import retrying
from pgquartz.runner.lock.errors import EtcdRefused, EtcdUnavailable
from pgquartz.runner.model.job import EtcdConfig

DEFAULT_PORT = 2379
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.enable_retries", 1),
    ("grpc.lb_policy_name", "round_robin"),
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time)
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


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


def grpc_target(endpoints: list[str]) -> str:
    """One gRPC target for all endpoints: ``ipv4:10.0.0.1:2379,10.0.0.2:2379``."""
    v4: list[str] = []
    v6: list[str] = []
    for endpoint in endpoints:
        host, port, _ = parse_endpoint(endpoint)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise EtcdUnavailable(f"cannot resolve etcd endpoint {endpoint!r}: {error}") from None
        for family, _, _, _, address in infos:
            if family == socket.AF_INET:
                v4.append(f"{address[0]}:{port}")
            elif family == socket.AF_INET6:
                v6.append(f"[{address[0]}]:{port}")
    if v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4))
    if v6:
        return "ipv6:" + ",".join(dict.fromkeys(v6))
    raise EtcdUnavailable(f"no address for the etcd endpoints {endpoints}")


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _read(path: str) -> bytes:
    return pathlib.Path(path).expanduser().read_bytes()


class Client(aetcd.Client):
    """aetcd's client on a channel to every endpoint, with optional TLS and authentication."""

    def __init__(
        self, config: EtcdConfig, *, timeout: float = 5.0, budget: retrying.Budget | None = None
    ) -> None:
        username, password = None, None
        if config.username:
            username = config.username
            password = _password(config)
        super().__init__(host="unused", port=0, username=username, password=password, timeout=timeout)
        self._config = config
        self.budget = budget
        """Retry transient errors of the lock's calls until this is spent; None: fail at once."""
        self.on_retry: Any = lambda error, attempt: None

    async def _retrying(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        if self.budget is None:
            return await operation(*args, **kwargs)
        return await retrying.call(
            lambda: operation(*args, **kwargs), budget=self.budget, on_retry=self.on_retry
        )

    async def keep_alive_once(self, lease_id: int, *, within: float) -> Any:
        """One keep-alive of the lease with gRPC's own deadline (never cancelled from asyncio:
        cancelling a streaming call mid-flight can leave it hanging); the reply, or None."""
        try:
            async for reply in self.leasestub.LeaseKeepAlive(
                [rpc.LeaseKeepAliveRequest(ID=lease_id)], timeout=within, metadata=self.metadata
            ):
                return reply
        except grpc.aio.AioRpcError as error:
            raise EtcdUnavailable(f"keep-alive failed: {error.code().name}: {error.details()}") from None
        return None

    async def get_prefix(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().get_prefix, *args, **kwargs)

    async def transaction(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().transaction, *args, **kwargs)

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().put, *args, **kwargs)

    async def lease(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().lease, *args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().watch, *args, **kwargs)

    async def connect(self) -> None:
        """Open the channel (replaces aetcd's single-host, plaintext connect)."""
        if self._connected.is_set():
            return
        config = self._config
        target = grpc_target(config.endpoints)
        options = CHANNEL_OPTIONS
        tls = config.ca_file is not None or any(parse_endpoint(e)[2] for e in config.endpoints)
        try:
            if tls:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(config.ca_file) if config.ca_file else None,
                    private_key=_read(config.key_file) if config.key_file else None,
                    certificate_chain=_read(config.cert_file) if config.cert_file else None,
                )
                self.channel = grpc.aio.secure_channel(target, credentials, options=options)
            else:
                self.channel = grpc.aio.insecure_channel(target, options=options)
        except OSError as error:
            raise EtcdRefused(f"cannot read the etcd TLS files: {error}") from None
        if self._username is not None:
            self.auth_stub = rpc.AuthStub(self.channel)
            try:
                response = await self.auth_stub.Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                await self.channel.close()
                message = f"etcd authentication as {self._username!r} failed: {error.details()}"
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise EtcdUnavailable(message) from None
                raise EtcdRefused(message) from None
            self.metadata = (("token", response.token),)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


def _password(config: EtcdConfig) -> str:
    try:
        password = secrets.read(file=config.password_file, env=config.password_env, what="etcd password")
    except secrets.SecretUnavailable as error:
        raise EtcdRefused(str(error)) from None
    if password is None:
        raise EtcdRefused("an etcd username needs passwordFile or passwordEnv")
    return password
