"""The engine: steps in parallel runners under an optional guard (the lock), then checks in order.

Semantics, as PgQuartz's manual gives them and where it is silent:

- ``parallel`` runner tasks pull ready instances from one FIFO queue; all
  instances of a step are queued together when the step becomes ready.
- A step becomes ready when every step it waits for (``depends`` plus the steps
  its rules read) is Done or Skipped. Its ``when`` rules are evaluated then; if
  one does not hold (or cannot be evaluated) the step is Skipped, which counts
  as done for its dependants.
- An instance runs its commands in order and stops at the first failing one. A
  failed step does not stop other steps, nor fail the run: checks decide.
- Steps run inside ``steps_guard`` (the etcd lock, when configured); checks run
  after it is released, one at a time in file order, each matrix instance in
  turn, and the first failing check ends the run.
- ``timeout`` bounds the whole run (guard, steps and checks). When it expires,
  every running command is cancelled (process groups terminated, then killed)
  before :func:`run` returns.
- Cancelling :func:`run` (SIGINT/SIGTERM in the CLI) cancels every command the
  same way and propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager

from pgquartz.runner.conditions import expectations, rules
from pgquartz.runner.conditions.views import StepSnapshot
from pgquartz.runner.engine import events, roles
from pgquartz.runner.engine.dispatch import Dispatcher
from pgquartz.runner.engine.summary import Outcome, StepSummary, Summary
from pgquartz.runner.loader import LoadedJob
from pgquartz.runner.lock import errors as lock_errors
from pgquartz.runner.model.job import Command, Job
from pgquartz.runner.model.results import CommandResult, CommandState, InstanceResult, StepState
from pgquartz.runner.plan import matrix

StepsGuard = Callable[[], AbstractAsyncContextManager[Mapping[str, str]]]
"""Entered around the steps; yields variables for every command (the lock's fencing token)."""


class GuardFailed(Exception):
    """Raised by a steps guard that could not be entered or was lost; carries the outcome."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@contextlib.asynccontextmanager
async def no_guard() -> AsyncIterator[Mapping[str, str]]:
    yield {}


async def run(
    loaded: LoadedJob,
    *,
    dispatcher: Dispatcher,
    emit: events.Emit,
    steps_guard: StepsGuard = no_guard,
    debug: bool = False,
    cancelled_outcome: Callable[[], Outcome] = lambda: Outcome.INTERRUPTED,
) -> Summary:
    """Run a loaded job to its end and return its summary (also emitted as ``JobFinished``).

    If the run is cancelled, every command is stopped, a summary with
    ``cancelled_outcome()`` is emitted, and the cancellation propagates.
    """
    job = loaded.job
    started = datetime.datetime.now(datetime.UTC)
    timeout = job.timeout.total_seconds() if job.timeout else None
    emit(
        events.JobStarted(
            job=loaded.name,
            file=str(loaded.path),
            steps=len(loaded.plan.steps),
            instances=loaded.plan.instance_count,
            checks=sum(len(check.instances) for check in loaded.plan.checks),
            parallel=job.parallel,
            timeout=timeout,
        )
    )
    steps = _Steps(loaded, dispatcher, emit, debug or job.debug)
    outcome, message, failed_check = Outcome.SUCCEEDED, "", None
    guard_entered = False
    try:
        async with asyncio.timeout(timeout):
            try:
                async with steps_guard() as guard_env:
                    guard_entered = True
                    # Roles are checked once the lock is held: a failover while waiting counts.
                    await _check_roles(job, dispatcher, emit)
                    dispatcher.use_run_variables(guard_env)
                    await steps.run()
            except GuardFailed as failure:
                outcome, message = failure.outcome, str(failure)
            except lock_errors.LockNotAcquired as failure:
                outcome, message = Outcome.LOCK_NOT_ACQUIRED, str(failure)
            except lock_errors.LockLost as failure:
                outcome = Outcome.LOCK_LOST
                message = f"lost the etcd lock while steps ran: {failure}; every running command was stopped"
            if outcome is Outcome.SUCCEEDED:
                failed_check = await _run_checks(loaded, dispatcher, emit, debug or job.debug)
                if failed_check is not None:
                    outcome, message = Outcome.CHECK_FAILED, f"check failed: {failed_check}"
    except TimeoutError:
        if guard_entered:
            outcome = Outcome.TIMED_OUT
            message = f"timeout of {job.timeout} expired; every running command was stopped"
        else:
            outcome = Outcome.LOCK_NOT_ACQUIRED
            message = f"the lock was not acquired within the timeout of {job.timeout}; nothing ran"
    except asyncio.CancelledError:
        outcome = cancelled_outcome()
        emit(
            events.JobFinished(
                summary=_summary(
                    loaded,
                    steps=steps,
                    outcome=outcome,
                    started=started,
                    message="stopped by a signal; every running command was stopped",
                    failed_check=None,
                )
            )
        )
        raise
    finally:
        await asyncio.shield(dispatcher.aclose())
    if outcome is Outcome.SUCCEEDED:
        failed = [name for name, summary in steps.summaries().items() if summary.failed_instances]
        message = "all checks passed" if job.checks else "no checks defined"
        if failed:
            message += f"; steps with failures: {', '.join(failed)}"
    summary = _summary(
        loaded, steps=steps, outcome=outcome, started=started, message=message, failed_check=failed_check
    )
    emit(events.JobFinished(summary=summary))
    return summary


async def _check_roles(job: Job, dispatcher: Dispatcher, emit: events.Emit) -> None:
    wrong_roles = await roles.mismatches(job, dispatcher.connections)
    if wrong_roles and not job.run_on_role_error:
        raise GuardFailed(
            Outcome.ROLE_MISMATCH,
            "; ".join(wrong_roles) + " (nothing ran; set runOnRoleError to skip its commands instead)",
        )
    for mismatch in wrong_roles:
        emit(events.Notice(level="warning", message=f"{mismatch}: its commands will be skipped"))


def _summary(
    loaded: LoadedJob,
    *,
    steps: _Steps,
    outcome: Outcome,
    started: datetime.datetime,
    message: str,
    failed_check: str | None,
) -> Summary:
    return Summary(
        job=loaded.name,
        outcome=outcome,
        message=message,
        started=started,
        finished=datetime.datetime.now(datetime.UTC),
        steps=tuple(steps.summaries().values()),
        failed_check=failed_check,
    )


@dataclasses.dataclass
class _StepProgress:
    state: StepState = StepState.WAITING
    results: list[InstanceResult | None] = dataclasses.field(default_factory=list)
    remaining: int = 0
    started: float | None = None
    finished: float | None = None


class _Steps:
    """The steps phase: readiness, rules, the queue and its runners."""

    def __init__(self, loaded: LoadedJob, dispatcher: Dispatcher, emit: events.Emit, debug: bool) -> None:
        self._plan = loaded.plan
        self._dispatcher = dispatcher
        self._emit = emit
        self._debug = debug
        self._dependants = self._plan.dependants()
        self._progress = {
            name: _StepProgress(results=[None] * len(step.instances), remaining=len(step.instances))
            for name, step in self._plan.steps.items()
        }
        self._unfinished = len(self._plan.steps)
        self._queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()

    async def run(self) -> None:
        for name in self._plan.order:
            if not self._plan.steps[name].waits_for:
                self._make_ready(name)
        async with asyncio.TaskGroup() as group:
            for _ in range(self._plan.job.parallel):
                group.create_task(self._runner())

    def summaries(self) -> dict[str, StepSummary]:
        result = {}
        for name in self._plan.order:
            progress = self._progress[name]
            finished = [r for r in progress.results if r is not None]
            duration = 0.0
            if progress.started is not None:
                duration = (progress.finished or time.monotonic()) - progress.started
            result[name] = StepSummary(
                name=name,
                state=progress.state,
                rc=sum(r.rc for r in finished),
                duration=duration,
                instances=len(progress.results),
                failed_instances=sum(1 for r in finished if r.failed),
            )
        return result

    def _snapshot(self) -> dict[str, StepSnapshot]:
        return {
            name: StepSnapshot(
                state=progress.state,
                instances=tuple(r for r in progress.results if r is not None),
            )
            for name, progress in self._progress.items()
        }

    def _make_ready(self, name: str) -> None:
        planned = self._plan.steps[name]
        progress = self._progress[name]
        if planned.rules:
            snapshot = self._snapshot()
            for rule in planned.rules:
                try:
                    holds = rule.holds(snapshot)
                except rules.RuleError as error:
                    self._skip(name, f"rule {rule.source!r} could not be evaluated: {error}", error=True)
                    return
                if not holds:
                    self._skip(name, f"rule {rule.source!r} does not hold")
                    return
        progress.state = StepState.READY
        self._emit(events.StepStarted(step=name, instances=len(planned.instances)))
        for index in range(len(planned.instances)):
            self._queue.put_nowait((name, index))

    def _skip(self, name: str, reason: str, *, error: bool = False) -> None:
        self._progress[name].state = StepState.SKIPPED
        self._emit(events.StepSkipped(step=name, reason=reason, rule_error=error))
        self._finished(name)

    def _finished(self, name: str) -> None:
        self._unfinished -= 1
        for dependant in self._dependants[name]:
            progress = self._progress[dependant]
            if progress.state is not StepState.WAITING:
                continue
            waits = self._plan.steps[dependant].waits_for
            if all(self._progress[dep].state in (StepState.DONE, StepState.SKIPPED) for dep in waits):
                self._make_ready(dependant)
        if self._unfinished == 0:
            for _ in range(self._plan.job.parallel):
                self._queue.put_nowait(None)

    async def _runner(self) -> None:
        while (item := await self._queue.get()) is not None:
            name, index = item
            await self._run_instance(name, index)

    async def _run_instance(self, name: str, index: int) -> None:
        planned = self._plan.steps[name]
        progress = self._progress[name]
        args = planned.instances[index]
        if progress.started is None:
            progress.started = time.monotonic()
            progress.state = StepState.RUNNING
        done: list[CommandResult] = []
        try:
            for command in planned.step.commands:
                self._emit(events.CommandStarted(step=name, instance=args, command=command.label))
                result = await _run_command(self._dispatcher, command, args)
                done.append(result)
                self._emit(
                    events.CommandFinished(
                        step=name, instance=args, command=command.label, result=result, debug=self._debug
                    )
                )
                if not result.ok:
                    break
        except asyncio.CancelledError:
            progress.results[index] = InstanceResult(
                step=name,
                args=args,
                commands=(
                    *done,
                    CommandResult(name="", state=CommandState.CANCELLED, rc=1, error="cancelled"),
                ),
            )
            raise
        progress.results[index] = InstanceResult(step=name, args=args, commands=tuple(done))
        progress.remaining -= 1
        if progress.remaining == 0:
            progress.state = StepState.DONE
            progress.finished = time.monotonic()
            finished = [r for r in progress.results if r is not None]
            self._emit(
                events.StepFinished(
                    step=name,
                    state=StepState.DONE,
                    rc=sum(r.rc for r in finished),
                    duration=progress.finished - (progress.started or progress.finished),
                    failed_instances=tuple(r.args for r in finished if r.failed),
                )
            )
            self._finished(name)


async def _run_command(dispatcher: Dispatcher, command: Command, args: Mapping[str, str]) -> CommandResult:
    try:
        return await dispatcher.run(command, args=args)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # an executor bug must fail this command, not the whole run
        return CommandResult(
            name=command.label,
            state=CommandState.FAILED,
            rc=1,
            started=datetime.datetime.now(datetime.UTC),
            error=f"internal error: {type(error).__name__}: {error}",
        )


async def _run_checks(
    loaded: LoadedJob, dispatcher: Dispatcher, emit: events.Emit, debug: bool
) -> str | None:
    """Run checks in order; return a description of the first failure, or None."""
    if not loaded.plan.checks:
        return None
    emit(events.ChecksStarted(checks=sum(len(check.instances) for check in loaded.plan.checks)))
    for planned in loaded.plan.checks:
        check = planned.check
        for args in planned.instances:
            emit(events.CommandStarted(step=None, instance=args, command=check.label))
            result = await _run_command(dispatcher, check, args)
            emit(
                events.CommandFinished(
                    step=None, instance=args, command=check.label, result=result, debug=debug
                )
            )
            reason = expectations.failure(check, result)
            emit(
                events.CheckFinished(
                    check=check.label, instance=args, passed=reason is None, reason=reason, result=result
                )
            )
            if reason is not None:
                label = f"{check.label} [{matrix.label(args)}]" if args else check.label
                return f"{label}: {reason}"
    return None
