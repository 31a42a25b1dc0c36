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
shielded from a second cancellation; once the lease is lost there is nothing to
release, and the runner exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from pgquartz.runner.lock import budget, mutex, retrying
from pgquartz.runner.lock.client import Client, Lease
from pgquartz.runner.lock.errors import EtcdUnavailable, LockLost, LockNotAcquired
from pgquartz.runner.model.job import BudgetConfig, EtcdConfig

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
    deadline: float | None = None,
    on_waiting: Callable[[str], None] = lambda message: None,
    cluster_identity: Callable[[], Awaitable[str]] | None = None,
) -> AsyncIterator[Mapping[str, str]]:
    """Hold the lock (and a slot of the job's budget, if it has one) for the body; raise
    :class:`LockLost` out of it if the lease is lost.

    ``deadline`` (monotonic: the job's timeout) bounds retrying an etcd that is
    unusable while getting in line; without it, :data:`retrying.UNAVAILABLE_LIMIT`
    seconds of failures in a row do. ``cluster_identity`` gives the database cluster's
    identity, the key of a budget that names none.
    """
    ttl = max(1, round(config.lock_timeout.total_seconds()))
    key = lock_key(config, job_name)
    try:
        retry = retrying.Budget(deadline=deadline)
        client = Client(config, timeout=min(5.0, max(1.0, ttl / 3)), budget=retry)
    except EtcdUnavailable as error:  # a password file that cannot be read
        raise LockNotAcquired(f"cannot take the etcd lock {key!r}: {error}") from None
    client.on_retry = _retry_notice(on_waiting)
    held: mutex.Mutex | None = None
    lost: list[str] = []
    try:
        try:
            held, sent = await _acquire(client, key=key, ttl=ttl, job_name=job_name, on_waiting=on_waiting)
        except (retrying.GaveUp, EtcdUnavailable, OSError) as error:
            raise LockNotAcquired(f"cannot take the etcd lock {key!r}: {retrying.describe(error)}") from None
        client.budget = None  # from here on, the lease's TTL is the bound (the watchdog's rule)
        task = asyncio.current_task()
        assert task is not None

        def stop(reason: str) -> None:
            if not lost:
                lost.append(reason)
                task.cancel()

        stop_within = min(stop_budget, ttl / 2)
        stopping = asyncio.Event()
        watchdog = asyncio.create_task(
            _keep_alive(
                client, held.lease, ttl=ttl, budget=stop_within, sent_ok=sent, stop=stop, stopping=stopping
            )
        )
        try:
            variables = {"PGQ_LOCK_REVISION": str(held.revision)}
            if config.budget is not None:
                client.budget = (
                    retry  # waiting for a slot rides out etcd's failures like waiting for the lock
                )
                variables |= await _take_slot(
                    client,
                    held,
                    config.budget,
                    job_name=job_name,
                    ttl=ttl,
                    identity=cluster_identity,
                    on_waiting=on_waiting,
                )
                client.budget = None
            yield variables
        except mutex.LeaseLost as gone:  # our place in the budget's line went with the lease
            raise LockLost(str(gone)) from None
        except asyncio.CancelledError:
            if lost and task.uncancel() == 0:
                raise LockLost(lost[0]) from None
            raise
        finally:
            # Let a keep-alive in flight end by its own deadline rather than cancel it mid-stream.
            stopping.set()
            await asyncio.wait([watchdog], timeout=RELEASE_TIMEOUT)
            if not watchdog.done():
                watchdog.cancel()
    finally:
        # A lost lease has taken our key with it, or will within the stop budget (etcd unreachable):
        # nothing is left to release, and retrying it would only hold up the exit.
        await asyncio.shield(_release(client, None if lost else held))


async def _take_slot(
    client: Client,
    held: mutex.Mutex,
    config: BudgetConfig,
    *,
    job_name: str,
    ttl: int,
    identity: Callable[[], Awaitable[str]] | None,
    on_waiting: Callable[[str], None],
) -> dict[str, str]:
    """A slot of the budget, on the lock's lease; the variables that tell the commands which."""
    cluster = None
    if config.key is None:
        if identity is None:
            raise LockNotAcquired("the budget has no key and the job no connection to learn its cluster from")
        try:
            cluster = await identity()
        except Exception as error:  # the connection's own error, already without secrets
            raise LockNotAcquired(f"cannot learn the database cluster for the budget: {error}") from None
    key = config.etcd_key(cluster)
    line = budget.Budget(
        client, key=key, slots=config.slots, lease=held.lease, value=mutex.identity(job_name)
    )
    said: list[int] = []

    def waiting(ahead: int) -> None:
        if not said:
            said.append(ahead)
            on_waiting(f"waiting for a slot of budget {key!r} ({config.slots} at once; {ahead} ahead)")

    began = time.monotonic()
    try:
        await line.enqueue()
        await line.wait(recheck=max(0.5, ttl / 3), on_waiting=waiting)
        slot = await line.claim(recheck=max(0.5, ttl / 3))
    except (retrying.GaveUp, EtcdUnavailable, OSError) as error:
        raise LockNotAcquired(f"cannot take a slot of budget {key!r}: {retrying.describe(error)}") from None
    waited = time.monotonic() - began
    if said:
        on_waiting(f"got slot {slot} of budget {key!r} after {waited:.1f}s")
    return {"PGQ_BUDGET_KEY": key, "PGQ_BUDGET_SLOT": str(slot), "PGQ_BUDGET_WAITED": f"{waited:.3f}"}


def _retry_notice(on_waiting: Callable[[str], None]) -> Callable[[BaseException, int], None]:
    """Say once per outage that etcd is being retried (not once per attempt)."""
    said: list[float] = []

    def notice(error: BaseException, attempt: int) -> None:
        if attempt == 1 and (not said or time.monotonic() - said[-1] > 10):
            said.append(time.monotonic())
            on_waiting(f"etcd is not answering ({retrying.describe(error)}); retrying on the other members")

    return notice


async def _acquire(
    client: Client, *, key: str, ttl: int, job_name: str, on_waiting: Callable[[str], None]
) -> tuple[mutex.Mutex, float]:
    """Get in line, wait for our turn and confirm the lease; if our place is lost (the lease
    expired), get in line again. Returns the mutex and when its confirmed keep-alive was sent."""
    while True:
        lease = await client.grant(ttl)
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
            await attempt.wait(recheck=max(0.5, ttl / 3))
            await attempt.mark_held()
            keeper.cancel()
            sent = await _confirm(client, lease, ttl=ttl)
            return attempt, sent
        except mutex.LeaseLost as lost:
            on_waiting(f"{lost}; getting in line again")
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.revoke(lease.id))
            raise
        finally:
            keeper.cancel()


async def _confirm(client: Client, lease: Lease, *, ttl: int) -> float:
    """A keep-alive answered before the steps start: the watchdog counts from when it was sent.

    Raises :class:`mutex.LeaseLost` if etcd says the lease is gone (our key went with it).
    """

    async def refresh() -> tuple[float, int]:
        sent = time.monotonic()
        left = await client.keep_alive_once(lease.id, within=_attempt_timeout(ttl))
        return sent, left

    assert client.budget is not None
    sent, left = await retrying.call(refresh, budget=client.budget, on_retry=client.on_retry)
    if left <= 0:
        raise mutex.LeaseLost("the etcd lease expired before the steps could start")
    return sent


def _attempt_timeout(ttl: float) -> float:
    """One keep-alive attempt's bound: short, so that a paused member leaves time to try another."""
    return max(0.3, min(1.0, ttl / 6))


async def _refresh_while_waiting(client: Client, lease: Lease, ttl: int) -> None:
    """A waiter's place in line lives as long as its lease: keep it while waiting."""
    while True:
        await asyncio.sleep(ttl / 3)
        with contextlib.suppress(Exception):
            await client.keep_alive_once(lease.id, within=client.timeout)


async def _keep_alive(
    client: Client,
    lease: Lease,
    *,
    ttl: float,
    budget: float,
    sent_ok: float,
    stop: Callable[[str], None],
    stopping: asyncio.Event,
) -> None:
    """Refresh every TTL/3 (retrying quickly after a failure, e.g. during a leader election);
    call ``stop`` before the lease can have expired on the server. Returns when ``stopping`` is set."""
    interval = ttl / 3
    failed = False
    while True:
        deadline = sent_ok + ttl - budget
        wait = min(RETRY_DELAY if failed else interval, deadline - time.monotonic())
        if wait <= 0:
            stop(f"no keep-alive of the etcd lease for {time.monotonic() - sent_ok:.1f}s (TTL {ttl:g}s)")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=wait)
        if stopping.is_set():
            return
        sent = time.monotonic()
        try:
            left = await client.keep_alive_once(
                lease.id, within=max(0.1, min(_attempt_timeout(ttl), deadline - sent))
            )
        except (EtcdUnavailable, OSError):
            failed = True
            continue
        if left <= 0:
            stop("the etcd lease expired or was revoked")
            return
        sent_ok, failed = sent, False


async def _release(client: Client, held: mutex.Mutex | None) -> None:
    """Delete our key and revoke the lease, retrying on other members for a few seconds; if that
    fails too, the lease expires by itself after its TTL."""
    try:
        if held is not None:
            budget = retrying.Budget(deadline=time.monotonic() + RELEASE_TIMEOUT)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(retrying.call(held.release, budget=budget), RELEASE_TIMEOUT)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), RELEASE_TIMEOUT)
