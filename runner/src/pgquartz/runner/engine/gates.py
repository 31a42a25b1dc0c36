"""Evaluating gates and waiting for them to open (the I/O half; the queries are in conditions.gatesql).

A built-in gate asks its connection's server (through the executor, so its
sessions, roles and failover checks are the run's own); a custom gate runs like
a check. A gate that cannot be evaluated (the server is down, the query fails)
is closed, with the error as its reason: it never opens by accident. All gates
are evaluated each round; :func:`wait_open` repeats the rounds every
``interval`` until they all hold or ``wait`` (bounded by the job's deadline) is
spent, reporting when the set of reasons changes, not every round.
"""

from __future__ import annotations

import asyncio
import time

from pgquartz.runner.conditions import expectations, gatesql
from pgquartz.runner.engine import events
from pgquartz.runner.engine.dispatch import Dispatcher
from pgquartz.runner.executors.identity import FailoverDetected
from pgquartz.runner.model import records
from pgquartz.runner.model.gates import Gate, Gates
from pgquartz.runner.model.job import Job, gate_check


class Verdict(records.Record):
    opened: bool
    waited: float
    reasons: tuple[str, ...] = ()
    """Why the gates were still closed when waiting ended (empty when they opened)."""


async def evaluate(job: Job, gates: Gates, dispatcher: Dispatcher) -> list[tuple[int, str]]:
    """One round: (position, reason) of each gate that does not hold (empty: all hold)."""
    closed = []
    for position, gate in enumerate(gates.require):
        reason = await _evaluate(job, gate, dispatcher)
        if reason is not None:
            closed.append((position, f"{gate.label}: {reason}" if gate.name else reason))
    return closed


async def _evaluate(job: Job, gate: Gate, dispatcher: Dispatcher) -> str | None:
    if gate.kind == "custom":
        check = gate_check(gate)
        result = await dispatcher.run(check, args={})
        return expectations.failure(check, result)
    name = job.gate_connection(gate)
    executor = dispatcher.connections[name]
    own = [pid for connection in dispatcher.connections.values() for pid in connection.backend_pids]
    try:
        role = await executor.current_role()
        sql, params = gatesql.query(gate, role=role, own_pids=own)
        row = await executor.fetch(sql, params)
    except FailoverDetected:
        raise
    except Exception as error:  # cannot be evaluated: closed, saying why
        return f"cannot be evaluated on {name!r}: {error}"
    return gatesql.verdict(gate, row)


async def wait_open(
    job: Job,
    gates: Gates,
    dispatcher: Dispatcher,
    *,
    emit: events.Emit,
    step: str | None,
    deadline: float | None,
) -> Verdict:
    """Evaluate until every gate holds, or until ``wait`` (and the job's ``deadline``) runs out."""
    started = time.monotonic()
    until = started + gates.wait.total_seconds()
    if deadline is not None:
        until = min(until, deadline)
    interval = gates.interval.total_seconds()
    shown: tuple[int, ...] = ()  # which gates were closed when last reported (values change each round)
    while True:
        closed = await evaluate(job, gates, dispatcher)
        reasons = tuple(reason for _, reason in closed)
        now = time.monotonic()
        if not closed:
            if shown:
                emit(events.GatesOpened(step=step, waited=now - started))
            return Verdict(opened=True, waited=now - started)
        which = tuple(position for position, _ in closed)
        if which != shown:
            emit(events.GatesClosed(step=step, reasons=reasons, waiting=max(0.0, until - now)))
            shown = which
        if now + interval > until:
            return Verdict(opened=False, waited=now - started, reasons=reasons)
        await asyncio.sleep(interval)
