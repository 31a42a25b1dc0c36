"""etcd's mutex recipe, compatible with PgQuartz (Go) runners on the same etcd.

Each contender grants a lease (TTL ``lockTimeout``) and creates
``<prefix><lease id in hex>`` with it; the lowest create revision under the
prefix holds the lock. A waiter watches the deletion of its predecessor (the
greatest create revision below its own), so waiters are served in arrival
order and a release wakes exactly one of them. This is the recipe behind Go's
``concurrency.Mutex`` and ``etcdctl lock``; with PgQuartz's prefix
``/pgquartz/<lockKey>//`` a fleet mixing PgQuartz and pgquartz still runs one
job at a time. The holder's create revision is its fencing token: it only
grows, so a stale holder's writes can be refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import socket
from typing import Any

from pgquartz.runner.lock.client import Client, KeyValue, Lease


def prefix_for(lock_key: str) -> bytes:
    """PgQuartz passes ``/pgquartz/<lockKey>/`` to Go's mutex, which appends another ``/``."""
    return f"/pgquartz/{lock_key}//".encode()


def identity(job: str) -> dict[str, Any]:
    """Who holds (or waits for) the lock, stored as the key's value."""
    return {
        "host": socket.gethostname(),
        "pod": os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"),
        "pid": os.getpid(),
        "job": job,
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
    }


@dataclasses.dataclass(frozen=True)
class Contender:
    key: bytes
    create_revision: int
    lease: int
    value: dict[str, Any]


def _contender(kv: KeyValue) -> Contender:
    try:
        value = json.loads(kv.value.decode() or "{}")
    except (UnicodeDecodeError, ValueError):
        value = {"raw": kv.value.decode(errors="replace")}  # a PgQuartz (Go) holder stores ""
    if not isinstance(value, dict):
        value = {"raw": value}
    return Contender(key=kv.key, create_revision=kv.create_revision, lease=kv.lease, value=value)


async def contenders(client: Client, prefix: bytes) -> tuple[list[Contender], int]:
    """Everyone under the prefix, holder first (lowest create revision), and the store's revision."""
    found, revision = await client.range_prefix(prefix)
    return [_contender(kv) for kv in found], revision


class Mutex:
    """One attempt at the lock: :meth:`enqueue`, then :meth:`wait`, then :meth:`release`."""

    def __init__(self, client: Client, *, prefix: bytes, lease: Lease, value: dict[str, Any]) -> None:
        self._client = client
        self.prefix = prefix
        self.lease = lease
        self.key = prefix + f"{lease.id:x}".encode()
        self._value = value
        self.revision = 0

    async def enqueue(self) -> None:
        """Create our key (if a retry finds it already there, keep its revision)."""
        payload = json.dumps(self._value).encode()
        self.revision = await self._client.create(self.key, payload, lease=self.lease.id)

    async def wait(self, *, recheck: float | None = None) -> None:
        """Return once we hold the lock: wait for each predecessor's key to be deleted, in order.

        Raises :class:`LeaseLost` if our own key goes away while waiting (our lease expired,
        e.g. while etcd was unreachable): our place in line is gone. With ``recheck``, the
        line is read again at least that often: a watch on a member that is paused (its
        connection open, nothing answering) would otherwise deliver the deletion late.
        """
        while True:
            everyone, revision = await contenders(self._client, self.prefix)
            if not any(c.key == self.key for c in everyone):
                raise LeaseLost("our lock key disappeared while waiting (the lease expired or was revoked)")
            before = [c for c in everyone if c.create_revision < self.revision]
            if not before:
                return
            # Only our predecessor (no thundering herd), and our own key, in case our lease goes.
            await self._first_deleted([before[-1].key, self.key], after=revision, at_most=recheck)

    async def _first_deleted(self, keys: list[bytes], *, after: int, at_most: float | None) -> None:
        waiters = [asyncio.ensure_future(self._client.wait_deleted(key, after=after)) for key in keys]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED, timeout=at_most)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.wait(waiters)  # each closes its watch's connection
            for waiter in waiters:
                if not waiter.cancelled():
                    waiter.exception()  # a broken watch stream: the caller reads the line again

    async def mark_held(self) -> None:
        """Record when we got the lock (``lock status`` shows it); keeps the create revision."""
        self._value["acquired"] = datetime.datetime.now(datetime.UTC).isoformat()
        await self._client.put(self.key, json.dumps(self._value).encode(), lease=self.lease.id)

    async def release(self) -> None:
        """Delete our key and revoke the lease (the next waiter starts at once)."""
        await self._client.delete(self.key)
        await self._client.revoke(self.lease.id)


class LeaseLost(Exception):
    """The lease expired or was revoked: we no longer hold (or wait for) the lock."""
