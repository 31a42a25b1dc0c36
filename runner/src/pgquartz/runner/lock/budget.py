"""A budget: at most ``slots`` runs at once on one database cluster, whatever job they belong to.

A job's own lock keeps one run of that job at a time; heavy maintenance of
*different* jobs on the same cluster (a VACUUM here, a REINDEX there) needs a
limit across jobs. Once a run holds its lock it gets in a second line, under
``/pgquartz/budget/<key>//line/``: the ``slots`` lowest create revisions there
hold a slot (etcd's semaphore recipe, first come first served). The key is the
budget's own, or the database cluster's ``system_identifier`` (learned from the
job's first connection), so jobs that reach one cluster through different names
share one budget and a job on another cluster never waits for it.

A holder also claims a numbered slot key (``//slot/<n>``, the lowest free one)
and tells its commands which (``PGQ_BUDGET_SLOT``). Every key lives on the lock's
lease: when the run ends (or its lease is lost, or its runner is killed and the
lease expires) its place and its slot go with the lock, in one revision, and the
next in line gets them. A waiter watches the line for deletions and reads it
again at least every ``recheck`` seconds (a watch on a paused member may be late).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from pgquartz.runner.lock.client import Client, Lease
from pgquartz.runner.lock.mutex import LeaseLost

IDENTITY_QUERY = "select system_identifier::text from pg_control_system()"
"""The database cluster's identity: the same for a primary and its standbys, whatever their names."""


def prefix_for(key: str) -> bytes:
    return f"/pgquartz/budget/{key}//".encode()


class Budget:
    """A run's place in a budget's line, then its slot: :meth:`enqueue`, :meth:`wait`, :meth:`claim`."""

    def __init__(self, client: Client, *, key: str, slots: int, lease: Lease, value: dict[str, Any]) -> None:
        self._client = client
        self.key = key
        self.slots = slots
        self.lease = lease
        self.line = prefix_for(key) + b"line/"
        self.place = self.line + f"{lease.id:x}".encode()
        self._value = json.dumps(value).encode()
        self.revision = 0

    async def enqueue(self) -> None:
        self.revision = await self._client.create(self.place, self._value, lease=self.lease.id)

    async def ahead(self) -> tuple[int, int]:
        """How many are in line before us beyond the slots (0: we hold one), and the store's revision;
        raises :class:`LeaseLost` if our place has gone (our lease expired or was revoked)."""
        everyone, revision = await self._client.range_prefix(self.line)
        keys = [kv.key for kv in everyone]
        if self.place not in keys:
            raise LeaseLost("our place in the budget's line disappeared (the lease expired or was revoked)")
        return max(0, keys.index(self.place) - self.slots + 1), revision

    async def wait(self, *, recheck: float, on_waiting: Callable[[int], None] = lambda ahead: None) -> None:
        """Return once we are among the first ``slots`` in line."""
        while True:
            waiting, revision = await self.ahead()
            if not waiting:
                return
            on_waiting(waiting)
            await self._deletion_under(self.line, after=revision, at_most=recheck)

    async def claim(self, *, recheck: float) -> int:
        """The lowest free slot number (1 … ``slots``), claimed with our lease. At most ``slots`` runs
        hold a place among the first, so one is free, or is about to be (its holder's release is in
        flight: its keys go in one revision)."""
        slots = prefix_for(self.key) + b"slot/"
        while True:
            for number in range(1, self.slots + 1):
                if await self._client.claim(slots + str(number).encode(), self._value, lease=self.lease.id):
                    return number
            _, revision = await self._client.range_prefix(slots)
            await self._deletion_under(slots, after=revision, at_most=recheck)

    async def _deletion_under(self, prefix: bytes, *, after: int, at_most: float) -> None:
        """Until a key under ``prefix`` is deleted after revision ``after``, or ``at_most`` seconds."""
        waiter = asyncio.ensure_future(self._client.wait_deleted(prefix, after=after, prefix=True))
        try:
            await asyncio.wait([waiter], timeout=at_most)
        finally:
            waiter.cancel()
            await asyncio.wait([waiter])  # it cancels its watch on the member
            if not waiter.cancelled():
                waiter.exception()  # a broken watch: the caller reads again
