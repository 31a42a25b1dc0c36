"""The etcd client over etcd's JSON gateway: its calls against a real etcd, and how errors map.

The lock's own tests (test_lock.py, test_faults.py, test_member_loss.py) drive it
through the runner; these pin the client's contract where the runner cannot see it:
what each call returns, a Go runner's empty value, a watch that sees a deletion,
members that refuse, pause or drop a kept-alive connection, and which of etcd's
errors are worth retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import time
import uuid
from collections.abc import AsyncIterator

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
        ("10.0.0.1:2379", ("10.0.0.1", 2379, False)),
        ("etcd", ("etcd", 2379, False)),
        ("http://etcd:12379", ("etcd", 12379, False)),
        ("https://[::1]:2379", ("::1", 2379, True)),
    ],
)
def test_endpoints_are_read_as_pgquartz_writes_them(endpoint: str, parsed: tuple[str, int, bool]) -> None:
    assert etcd.parse_endpoint(endpoint) == parsed


@pytest.mark.parametrize(
    ("message", "status", "kind"),
    [
        (
            {"error": "etcdserver: leader changed", "code": 14, "message": "etcdserver: leader changed"},
            503,
            "retry",
        ),
        ({"error": "etcdserver: request timed out", "code": 4}, 504, "retry"),
        ({"error": "etcdserver: too many requests", "code": 8}, 429, "retry"),
        (None, 502, "retry"),  # a proxy's HTML page
        ({"error": {"grpc_code": 14, "http_code": 503, "message": "no leader"}}, 200, "retry"),
        (
            {"code": 3, "message": "etcdserver: authentication failed, invalid user ID or password"},
            400,
            "refused",
        ),
        ({"code": 7, "message": "etcdserver: permission denied"}, 403, "refused"),
        ({"code": 16, "message": "etcdserver: invalid auth token"}, 401, "token"),
    ],
)
def test_etcds_errors_are_retried_only_when_another_attempt_can_succeed(
    message: object, status: int, kind: str
) -> None:
    error = etcd._error(message, status=status, member=etcd.Member("10.0.0.1", 2379, "10.0.0.1"))
    assert isinstance(error, EtcdUnavailable)
    assert retrying.is_transient(error) == (kind != "refused")
    assert isinstance(error, EtcdRefused) == (kind == "refused")
    assert isinstance(error, etcd.TokenRejected) == (kind == "token")
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
            with pytest.raises(EtcdUnavailable, match=f"no answer within 0.3s from {silent}"):
                await client.grant(5)


async def test_a_kept_alive_connection_the_member_closed_is_replaced(etcd: EtcdCluster) -> None:
    async with connected(etcd.endpoints) as client:
        await client.range_prefix(b"/nothing/")
        [[idle]] = client._idle.values()
        idle._writer.transport.abort()  # as a member restarted meanwhile would leave it
        await client.range_prefix(b"/nothing/")


async def test_a_cancelled_call_leaves_no_connection_behind() -> None:
    member = SilentMember()
    async with member as silent, connected([silent]) as client:
        call = asyncio.create_task(client.grant(5))
        await asyncio.sleep(0.2)
        assert member.open == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(50):
            if member.open == 0:
                break
            await asyncio.sleep(0.02)
        assert member.open == 0


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


async def test_an_etcd_without_its_json_gateway_is_refused_saying_so() -> None:
    with running_etcd(1, options={"--enable-grpc-gateway=false": ""}) as cluster:
        async with connected(cluster.endpoints) as client:
            with pytest.raises(EtcdRefused, match="--enable-grpc-gateway=false"):
                await client.grant(5)


async def test_every_address_of_a_name_is_a_member_of_its_own(etcd: EtcdCluster) -> None:
    """A headless Service's name: one address paused, another answering; calls go to each in turn,
    so the paused one costs a retry, not every call."""
    port = int(etcd.endpoints[0].rsplit(":", 1)[1])
    async with SilentMember("127.0.0.2", port):  # the same port as the live member, another address

        async def two_pods(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
            assert host == "etcd.db.svc"
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")
            ]

        budget = retrying.Budget(deadline=time.monotonic() + 10)
        async with connected([f"etcd.db.svc:{port}"], timeout=0.5, budget=budget) as client:
            client._getaddrinfo = two_pods
            started = time.monotonic()
            for _ in range(4):
                await client.range_prefix(b"/nothing/")
            assert time.monotonic() - started < 3
            assert [member.address for member in client._members] == ["127.0.0.2", "127.0.0.1"]


async def test_a_name_that_does_not_resolve_is_unavailable_not_refused() -> None:
    async with connected(["no-such-etcd.invalid:2379"]) as client:
        with pytest.raises(EtcdUnavailable, match="cannot resolve the etcd endpoints") as raised:
            await client.grant(5)
    assert not isinstance(raised.value, EtcdRefused)  # DNS may come up: retried within the budget
