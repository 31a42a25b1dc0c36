"""The lock around a run's steps: acquire, keep alive, stop everything if it is lost, release.

:func:`hold` is the engine's steps guard. It takes the lock (waiting in line,
bounded by the job's timeout, which the engine applies around it), yields
``PGQ_LOCK_REVISION`` (the fencing token) for the commands, and keeps the lease
alive in the background. Safety rule: the server's lease cannot expire before
``sent + TTL``, where ``sent`` is when the last successful keep-alive was sent.
The watchdog stops the steps at ``sent + TTL - stop_budget`` (the time it
takes to terminate, then kill, the commands), so this runner's commands are gone
before etcd can hand the lock to the next runner. A lease that etcd reports as
gone (revoked, expired) stops the steps at once. Losing the lock raises
:class:`~pgquartz.runner.lock.errors.LockLost` out of the steps;
leaving the guard in any way (end of steps, error, SIGTERM) releases the lock,
shielded from a second cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping

import aetcd

from pgquartz.runner.lock import mutex
from pgquartz.runner.lock.client import Client, EtcdUnavailable
from pgquartz.runner.lock.errors import LockLost, LockNotAcquired
from pgquartz.runner.model.job import EtcdConfig

RELEASE_TIMEOUT = 5.0
RETRY_DELAY = 0.25


def lock_key(config: EtcdConfig, job_name: str) -> str:
    return config.lock_key or job_name


@contextlib.asynccontextmanager
async def hold(
    config: EtcdConfig,
    *,
    job_name: str,
    stop_budget: float,
    on_waiting: Callable[[str], None] = lambda message: None,
) -> AsyncIterator[Mapping[str, str]]:
    """Hold the lock for the body; raise :class:`LockLost` out of it if the lease is lost."""
    ttl = max(1, round(config.lock_timeout.total_seconds()))
    client = Client(config, timeout=min(5.0, max(1.0, ttl / 3)))
    key = lock_key(config, job_name)
    held: mutex.Mutex | None = None
    try:
        try:
            held = await _acquire(client, key=key, ttl=ttl, job_name=job_name, on_waiting=on_waiting)
        except (EtcdUnavailable, aetcd.ClientError, OSError) as error:
            raise LockNotAcquired(f"cannot take the etcd lock {key!r}: {_describe(error)}") from None
        task = asyncio.current_task()
        assert task is not None
        lost: list[str] = []

        def stop(reason: str) -> None:
            if not lost:
                lost.append(reason)
                task.cancel()

        budget = min(stop_budget, ttl / 2)
        sent = time.monotonic()
        try:
            reply = await client.refresh_lease(held.lease.id)
        except (aetcd.ClientError, OSError) as error:
            raise LockLost(
                f"the etcd lease could not be confirmed before the steps: {_describe(error)}"
            ) from None
        if reply is None or reply.TTL <= 0:
            raise LockLost("the etcd lease expired before the steps could start")
        watchdog = asyncio.create_task(
            _keep_alive(client, held.lease, ttl=ttl, budget=budget, sent_ok=sent, stop=stop)
        )
        try:
            yield {"PGQ_LOCK_REVISION": str(held.revision)}
        except asyncio.CancelledError:
            if lost and task.uncancel() == 0:
                raise LockLost(lost[0]) from None
            raise
        finally:
            watchdog.cancel()
            await asyncio.wait([watchdog])
    finally:
        await asyncio.shield(_release(client, held))


async def _acquire(
    client: Client, *, key: str, ttl: int, job_name: str, on_waiting: Callable[[str], None]
) -> mutex.Mutex:
    """Get in line and wait for our turn; if our place is lost (lease expired), get in line again."""
    while True:
        lease = await client.lease(ttl)
        attempt = mutex.Mutex(
            client, prefix=mutex.prefix_for(key), lease=lease, value=mutex.identity(job_name)
        )
        keeper = asyncio.create_task(_refresh_while_waiting(client, lease, ttl))
        try:
            await attempt.enqueue()
            everyone, _ = await mutex.contenders(client, attempt.prefix)
            if everyone and everyone[0].key != attempt.key:
                holder = everyone[0].value
                on_waiting(
                    f"waiting for the etcd lock {key!r}, held by"
                    f" {holder.get('pod') or holder.get('host', '?')} (pid {holder.get('pid', '?')})"
                    f" since {holder.get('acquired', holder.get('started', '?'))}"
                )
            await attempt.wait()
            await attempt.mark_held()
            return attempt
        except mutex.LeaseLost as lost:
            on_waiting(f"{lost}; getting in line again")
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.revoke_lease(lease.id))
            raise
        finally:
            keeper.cancel()


async def _refresh_while_waiting(client: Client, lease: aetcd.Lease, ttl: int) -> None:
    """A waiter's place in line lives as long as its lease: keep it while waiting."""
    while True:
        await asyncio.sleep(ttl / 3)
        with contextlib.suppress(Exception):
            await client.refresh_lease(lease.id)


async def _keep_alive(
    client: Client,
    lease: aetcd.Lease,
    *,
    ttl: float,
    budget: float,
    sent_ok: float,
    stop: Callable[[str], None],
) -> None:
    """Refresh every TTL/3 (retrying quickly after a failure, e.g. during a leader election);
    call ``stop`` before the lease can have expired on the server."""
    interval = ttl / 3
    failed = False
    while True:
        deadline = sent_ok + ttl - budget
        wait = min(RETRY_DELAY if failed else interval, deadline - time.monotonic())
        if wait <= 0:
            stop(f"no keep-alive of the etcd lease for {time.monotonic() - sent_ok:.1f}s (TTL {ttl:g}s)")
            return
        await asyncio.sleep(wait)
        sent = time.monotonic()
        try:
            reply = await asyncio.wait_for(client.refresh_lease(lease.id), timeout=max(0.1, deadline - sent))
        except (TimeoutError, aetcd.ClientError, OSError):
            failed = True
            continue
        if reply is None or reply.TTL <= 0:
            stop("the etcd lease expired or was revoked")
            return
        sent_ok, failed = sent, False


async def _release(client: Client, held: mutex.Mutex | None) -> None:
    try:
        if held is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(held.release(), RELEASE_TIMEOUT)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), RELEASE_TIMEOUT)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, aetcd.ConnectionFailedError | aetcd.ConnectionTimeoutError) or not text:
        return f"etcd is unreachable ({type(error).__name__}{': ' + text if text else ''})"
    return text
