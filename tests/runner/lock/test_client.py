"""The lock's etcd client on etcd's gRPC API: its calls against a real etcd, and how errors map.

The lock's own tests (test_lock.py, test_faults.py, test_member_loss.py) drive it
through the runner; these pin the client's contract where the runner cannot see it:
what each call returns, a Go runner's empty value, a watch that sees a deletion,
members that refuse, pause or restart, what a cancelled call leaves on etcd, and
which of etcd's errors are worth retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from pgquartz.runner.lock import client as etcd
from pgquartz.runner.lock import retrying
from pgquartz.runner.lock.errors import EtcdRefused, EtcdUnavailable
from pgquartz.runner.model.job import EtcdConfig
from tests.support.etcdcluster import EtcdCluster, running_etcd


def config(endpoints: list[str], **fields: str) -> EtcdConfig:
    return EtcdConfig.from_data({"endpoints": endpoints, **fields})


@contextlib.asynccontextmanager
async def connected(endpoints: list[str], **options: object) -> AsyncIterator[etcd.Client]:
    client = etcd.Client(config(endpoints), **options)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.close()


def test_prefix_end_is_the_first_key_after_the_prefix() -> None:
    assert etcd.prefix_end(b"/pgquartz/job//") == b"/pgquartz/job/0"
    assert etcd.prefix_end(b"a\xff") == b"b"
    assert etcd.prefix_end(b"\xff\xff") == b"\0"


@pytest.mark.parametrize(
    ("endpoint", "parsed"),
    [
        ("10.0.0.1:2379", ("10.0.0.1", 2379, False, "10.0.0.1:2379")),
        ("etcd", ("etcd", 2379, False, "etcd:2379")),
        ("http://etcd:12379", ("etcd", 12379, False, "etcd:12379")),
        ("https://[::1]:2379", ("::1", 2379, True, "[::1]:2379")),
    ],
)
def test_endpoints_are_read_as_pgquartz_writes_them(
    endpoint: str, parsed: tuple[str, int, bool, str]
) -> None:
    found = etcd.parse_endpoint(endpoint)
    assert (found.host, found.port, found.tls, str(found)) == parsed


@pytest.mark.parametrize("endpoint", ["", "http://", "etcd:http", "etcd:99999"])
def test_an_endpoint_that_names_no_member_is_refused_at_once(endpoint: str) -> None:
    with pytest.raises(EtcdRefused, match="not an etcd endpoint"):
        etcd.Client(config([endpoint]))


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed", "next member"),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", "next member"),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; Connection refused",
            "next member",
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "retry"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", "retry"),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password",
            "refused",
        ),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", "refused"),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", "token"),
        (
            grpc.StatusCode.UNAVAILABLE,
            "Ssl handshake failed: SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED: self-signed certificate",
            "refused",
        ),
    ],
)
def test_etcds_errors_are_retried_only_when_another_attempt_can_succeed(
    code: grpc.StatusCode, details: str, kind: str
) -> None:
    status = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)
    error = etcd._error(status, etcd.Endpoint("10.0.0.1", 2379), within=5)
    assert isinstance(error, EtcdUnavailable)
    assert retrying.is_transient(error) == (kind != "refused")
    assert isinstance(error, EtcdRefused) == (kind == "refused")
    assert isinstance(error, etcd.TokenRejected) == (kind == "token")
    assert isinstance(error, etcd.Unreachable) == (kind == "next member")
    assert "10.0.0.1:2379" in str(error)


async def test_the_lock_calls_against_a_real_etcd(etcd: EtcdCluster) -> None:
    prefix = f"/pgquartz/c{uuid.uuid4().hex[:8]}//".encode()
    async with connected(etcd.endpoints) as client:
        lease = await client.grant(30)
        assert lease.id > 0 and lease.ttl == 30
        key = prefix + f"{lease.id:x}".encode()
        revision = await client.create(key, b'{"pid": 1}', lease=lease.id)
        assert await client.create(key, b"other", lease=lease.id) == revision  # already there: kept
        etcd.etcdctl("put", (prefix + b"go").decode(), "")  # a PgQuartz (Go) holder stores ""
        found, store = await client.range_prefix(prefix)
        assert [(kv.key, kv.value, kv.create_revision, kv.lease) for kv in found] == [
            (key, b'{"pid": 1}', revision, lease.id),
            (prefix + b"go", b"", revision + 1, 0),
        ]
        assert store == revision + 1
        await client.put(key, b"held", lease=lease.id)
        assert (await client.range_prefix(prefix))[0][0].create_revision == revision  # put keeps it
        assert 29 <= await client.keep_alive_once(lease.id, within=2) <= 30
        await client.revoke(lease.id)
        assert await client.keep_alive_once(lease.id, within=2) == 0
        assert [kv.key for kv in (await client.range_prefix(prefix))[0]] == [prefix + b"go"]


async def test_a_watch_returns_on_the_deletion_not_on_puts(etcd: EtcdCluster) -> None:
    key = f"/w{uuid.uuid4().hex[:8]}".encode()
    etcd.etcdctl("put", key.decode(), "v")
    async with connected(etcd.endpoints) as client:
        _, revision = await client.range_prefix(key)
        waiter = asyncio.create_task(client.wait_deleted(key, after=revision))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(etcd.etcdctl, "put", key.decode(), "changed")
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await client.delete(key)
        await asyncio.wait_for(waiter, 5)


async def test_a_watch_from_a_past_revision_sees_a_deletion_already_made(etcd: EtcdCluster) -> None:
    key = f"/w{uuid.uuid4().hex[:8]}".encode()
    etcd.etcdctl("put", key.decode(), "v")
    async with connected(etcd.endpoints) as client:
        _, revision = await client.range_prefix(key)
        await client.delete(key)
        await asyncio.wait_for(client.wait_deleted(key, after=revision), 5)


async def test_a_refused_member_is_skipped_at_once(etcd: EtcdCluster) -> None:
    async with connected(["127.0.0.1:1", *etcd.endpoints, "127.0.0.1:1"]) as client:
        started = time.monotonic()
        for _ in range(6):
            await client.range_prefix(b"/nothing/")
        assert time.monotonic() - started < 2


async def test_every_member_refusing_is_unavailable_naming_them() -> None:
    async with connected(["127.0.0.1:1", "127.0.0.1:2"]) as client:
        with pytest.raises(EtcdUnavailable) as raised:
            await client.grant(5)
    assert not isinstance(raised.value, EtcdRefused)
    assert "127.0.0.1:1" in str(raised.value) and "127.0.0.1:2" in str(raised.value)


class SilentMember:
    """A member that accepts connections and never answers (as a paused etcd does)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.open = 0
        self.server: asyncio.Server | None = None

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            with contextlib.suppress(asyncio.CancelledError):  # the test's loop ends with it open
                await reader.read()  # until the client closes its end
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._hold, self.host, self.port)
        return f"{self.host}:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_silent_member_costs_one_timeout_and_the_retry_reaches_another(etcd: EtcdCluster) -> None:
    async with SilentMember() as silent:
        budget = retrying.Budget(deadline=time.monotonic() + 10)
        async with connected([silent, *etcd.endpoints], timeout=0.5, budget=budget) as client:
            started = time.monotonic()
            for _ in range(4):
                await client.range_prefix(b"/nothing/")
            assert time.monotonic() - started < 3  # two of the four reach the silent one first
        async with connected([silent], timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable, match=f"no answer within 0.3s from {silent}") as raised:
                await client.grant(5)
            assert time.monotonic() - started < 1.5
        assert not isinstance(raised.value, EtcdRefused)


async def test_a_member_that_restarted_between_calls_is_used_again() -> None:
    with running_etcd(1) as cluster:
        budget = retrying.Budget(deadline=time.monotonic() + 20)
        async with connected(cluster.endpoints, timeout=1, budget=budget) as client:
            lease = await client.grant(30)
            cluster.restart(cluster.members[0])
            await asyncio.to_thread(cluster.wait_healthy)
            restarted = time.monotonic()
            assert 25 <= await client.keep_alive_once(lease.id, within=5) <= 30  # the lease outlived it
            found, _ = await client.range_prefix(b"/nothing/")
            assert found == []
            assert time.monotonic() - restarted < 3  # reconnected at once, not after gRPC's back-off


def watchers(cluster: EtcdCluster) -> int:
    """How many watches the member serves, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{cluster.members[0].client_url}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    [line] = [line for line in metrics.splitlines() if line.startswith("etcd_debugging_mvcc_watcher_total ")]
    return int(float(line.split()[1]))


async def test_a_cancelled_watch_leaves_no_watcher_on_etcd() -> None:
    with running_etcd(1) as cluster:
        async with connected(cluster.endpoints) as client:
            before = watchers(cluster)
            waits = [asyncio.create_task(client.wait_deleted(f"/w{n}".encode(), after=0)) for n in range(3)]
            await asyncio.sleep(0.5)
            assert watchers(cluster) == before + 3
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            for _ in range(50):
                if watchers(cluster) == before:
                    break
                await asyncio.sleep(0.05)
            assert watchers(cluster) == before


async def test_a_cancelled_call_leaves_no_connection_behind_once_closed() -> None:
    """gRPC lets a connection that is still shaking hands run to its timeout, after the channel is
    closed too: the client bounds that (what a silent member costs a runner that goes on)."""
    member = SilentMember()
    async with member as silent:
        client = etcd.Client(config([silent]))
        call = asyncio.create_task(client.grant(5))
        await asyncio.sleep(0.2)
        assert member.open == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await client.close()
        closed = time.monotonic()
        for _ in range(500):
            if member.open == 0:
                break
            await asyncio.sleep(0.02)
        assert member.open == 0
        assert time.monotonic() - closed < etcd.HANDSHAKE_TIMEOUT_MS / 1000 + 1


async def test_a_token_etcd_has_let_expire_is_renewed_once(tmp_path: pathlib.Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    with running_etcd(1, options={"--auth-token-ttl": "1"}) as cluster:
        cluster.etcdctl("user", "add", "root", f"--new-user-password={password}", "--interactive=false")
        cluster.etcdctl("auth", "enable")
        (tmp_path / "password").write_text(password)
        settings = config(cluster.endpoints, username="root", passwordFile=str(tmp_path / "password"))
        client = etcd.Client(settings)  # no budget: nothing is retried but the renewal
        try:
            await client.range_prefix(b"/anything/")
            first = client._token
            await asyncio.sleep(3)  # the token lives a second unused
            found, _ = await client.range_prefix(b"/anything/")  # refused with the old token, then renewed
            assert found == []
            assert client._token not in (None, first)
            second = client._token
            await asyncio.sleep(3)
            with pytest.raises(EtcdUnavailable, match="permission denied"):  # what etcd tells a stale token
                await asyncio.wait_for(client.wait_deleted(b"/gone", after=0), 5)
            watch = asyncio.create_task(client.wait_deleted(b"/gone", after=0))
            await asyncio.sleep(1)
            assert not watch.done()  # the next watch on a new token: waiting, not failing
            assert client._token not in (None, second)
            watch.cancel()
        finally:
            await client.close()


async def test_an_etcd_without_its_json_gateway_serves_the_lock() -> None:
    """The lock speaks etcd's gRPC API: its JSON gateway (which the earlier client needed) may be off."""
    with running_etcd(1, options={"--enable-grpc-gateway=false": ""}) as cluster:
        async with connected(cluster.endpoints) as client:
            lease = await client.grant(5)
            assert await client.create(b"/gw/key", b"v", lease=lease.id) > 0


async def test_a_name_that_does_not_resolve_is_unavailable_not_refused() -> None:
    async with connected(["no-such-etcd.invalid:2379"]) as client:
        with pytest.raises(EtcdUnavailable, match=r"no-such-etcd\.invalid:2379.*resolving") as raised:
            await client.grant(5)
    assert not isinstance(raised.value, EtcdRefused)  # DNS may come up: retried within the budget
