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
- The job's ``gates`` are evaluated once the guard is entered, before the first
  step; closed past their ``wait``, the run ends as ``gated`` (or
  ``gate-failed``) with nothing run and no checks. A step's gates are evaluated
  when it becomes ready; closed, the step is skipped (or fails) and the others
  go on.
- A failover an executor detects on a connection whose ``onFailover`` is abort
  stops every command, like a lost lock, and the run ends as ``failover``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from pgquartz.runner.conditions import expectations
from pgquartz.runner.engine import events, gates, roles
from pgquartz.runner.engine.dispatch import Dispatcher
from pgquartz.runner.engine.summary import Outcome, StepSummary, Summary
from pgquartz.runner.executors.identity import FailoverDetected, FailoverSeen
from pgquartz.runner.loader import LoadedJob
from pgquartz.runner.lock import errors as lock_errors
from pgquartz.runner.model.gates import OnTimeout
from pgquartz.runner.model.job import Command, Job
from pgquartz.runner.model.results import (
    CommandResult,
    CommandState,
    InstanceResult,
    OnRetry,
    RetryAttempt,
    StepState,
)
from pgquartz.runner.plan import matrix

if TYPE_CHECKING:  # rules and their views of results: imported by the jobs that have rules
    from pgquartz.runner.conditions.views import StepSnapshot

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
    announce_commands: bool = True,
) -> Summary:
    """Run a loaded job to its end and return its summary (also emitted as ``JobFinished``).

    If the run is cancelled, every command is stopped, a summary with
    ``cancelled_outcome()`` is emitted, and the cancellation propagates.
    ``announce_commands=False`` leaves out ``CommandStarted``, the most frequent event, when no
    reporter renders it (each command still ends with its ``CommandFinished``).
    """
    job = loaded.job
    started = datetime.datetime.now(datetime.UTC)
    timeout = job.timeout.total_seconds() if job.timeout else None
    deadline = time.monotonic() + timeout if timeout is not None else None
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
    record = _Record()
    dispatcher.on_failover = functools.partial(_failover_seen, emit, record)
    steps = _Steps(
        loaded, dispatcher, emit, debug or job.debug, deadline=deadline, announce=announce_commands
    )
    outcome, message, failed_check = Outcome.SUCCEEDED, "", None
    checks = _Checks(loaded, dispatcher, emit, debug or job.debug, announce=announce_commands)
    guard_entered = False
    try:
        async with asyncio.timeout(timeout):
            try:
                async with steps_guard() as guard_env:
                    guard_entered = True
                    record.budget = _budget_held(guard_env)
                    # Roles are checked once the lock is held: a failover while waiting counts.
                    await _check_roles(job, dispatcher, emit)
                    await _wait_for_gates(job, dispatcher, emit, deadline, record)
                    dispatcher.use_run_variables(guard_env)
                    await steps.run()
            except GuardFailed as failure:
                outcome, message = failure.outcome, str(failure)
            except lock_errors.LockNotAcquired as failure:
                outcome, message = Outcome.LOCK_NOT_ACQUIRED, str(failure)
            except lock_errors.LockLost as failure:
                outcome = Outcome.LOCK_LOST
                message = f"lost the etcd lock while steps ran: {failure}; every running command was stopped"
            except FailoverDetected as failure:
                outcome, message = Outcome.FAILOVER, f"{failure}; every running command was stopped"
            if outcome is Outcome.SUCCEEDED:
                try:
                    failed_check = await checks.run()
                except FailoverDetected as failure:
                    outcome, message = Outcome.FAILOVER, f"{failure} (while checks ran)"
                if failed_check is not None:
                    outcome, message = Outcome.CHECK_FAILED, f"check failed: {failed_check}"
    except TimeoutError:
        if guard_entered:
            outcome = Outcome.TIMED_OUT
            message = f"timeout of {job.timeout} expired; every running command was stopped"
        else:
            outcome = Outcome.LOCK_NOT_ACQUIRED
            budgeted = job.etcd_config is not None and job.etcd_config.budget is not None
            also = " (with a slot of its budget)" if budgeted else ""
            message = f"the lock was not acquired{also} within the timeout of {job.timeout}; nothing ran"
    except asyncio.CancelledError:
        outcome = cancelled_outcome()
        emit(
            events.JobFinished(
                summary=_summary(
                    loaded,
                    steps=steps,
                    checks=checks,
                    record=record,
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
        loaded,
        steps=steps,
        checks=checks,
        record=record,
        outcome=outcome,
        started=started,
        message=message,
        failed_check=failed_check,
    )
    emit(events.JobFinished(summary=summary))
    return summary


class _Record:
    """What the summary reports beyond steps and checks."""

    __slots__ = ("budget", "failover", "gated")

    def __init__(self) -> None:
        self.failover: dict[str, Any] | None = None
        self.gated: tuple[str, ...] = ()
        self.budget: dict[str, Any] | None = None


def _budget_held(guard_env: Mapping[str, str]) -> dict[str, Any] | None:
    """The budget slot the guard took, as the summary shows it (None: the job has no budget)."""
    if "PGQ_BUDGET_KEY" not in guard_env:
        return None
    return {
        "key": guard_env["PGQ_BUDGET_KEY"],
        "slot": int(guard_env["PGQ_BUDGET_SLOT"]),
        "waited": float(guard_env.get("PGQ_BUDGET_WAITED", "0")),
    }


def _failover_seen(emit: events.Emit, record: _Record, seen: FailoverSeen) -> None:
    record.failover = seen.to_dict()
    emit(
        events.Failover(
            connection=seen.connection,
            changes=tuple(seen.changes),
            before=seen.before.to_dict(),
            after=seen.after.to_dict(),
            action=seen.action.value,
        )
    )


async def _wait_for_gates(
    job: Job, dispatcher: Dispatcher, emit: events.Emit, deadline: float | None, record: _Record
) -> None:
    """The job's gates, before the first step: closed past their wait, the run ends here."""
    if job.gates is None:
        return
    verdict = await gates.wait_open(job, job.gates, dispatcher, emit=emit, step=None, deadline=deadline)
    if verdict.opened:
        return
    record.gated = verdict.reasons
    waited = f" after waiting {_seconds(verdict.waited)}" if job.gates.wait.total_seconds() else ""
    reasons = "; ".join(verdict.reasons)
    if job.gates.on_timeout is OnTimeout.FAIL:
        raise GuardFailed(Outcome.GATE_FAILED, f"gates still closed{waited}: {reasons}; nothing ran")
    raise GuardFailed(Outcome.GATED, f"gated{waited}: {reasons}; nothing ran")


def _seconds(value: float) -> str:
    return f"{value:.1f}s"


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
    checks: _Checks,
    record: _Record,
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
        check_retries=tuple(checks.retries.items()),
        failover=record.failover,
        gated=record.gated,
        budget=record.budget,
    )


class _StepProgress:
    """Where a step is: its state, its instances' results so far, how many are still to end."""

    __slots__ = ("finished", "remaining", "results", "started", "state")

    def __init__(self, *, results: list[InstanceResult | None], remaining: int) -> None:
        self.state = StepState.WAITING
        self.results = results
        self.remaining = remaining
        self.started: float | None = None
        self.finished: float | None = None


class _Phase:
    """What the steps and the checks run their commands with, and how each command is reported."""

    def __init__(
        self, loaded: LoadedJob, dispatcher: Dispatcher, emit: events.Emit, debug: bool, *, announce: bool
    ) -> None:
        self._plan = loaded.plan
        self._dispatcher = dispatcher
        self._emit = emit
        self._debug = debug
        self._announce = announce

    async def _run_reported(
        self, step: str | None, command: Command, args: Mapping[str, str]
    ) -> CommandResult:
        """Run one command of an instance (of a check: ``step`` None) between its start (if a
        reporter wants it) and its end."""
        emit = self._emit
        if self._announce:
            emit(events.CommandStarted(step=step, instance=args, command=command.label))
        result = await _run_command(
            self._dispatcher, command, args, _retry_reporter(emit, step, args, command)
        )
        emit(
            events.CommandFinished(
                step=step, instance=args, command=command.label, result=result, debug=self._debug
            )
        )
        return result


class _Steps(_Phase):
    """The steps phase: readiness, rules, gates, the queue and its runners."""

    def __init__(
        self,
        loaded: LoadedJob,
        dispatcher: Dispatcher,
        emit: events.Emit,
        debug: bool,
        *,
        deadline: float | None = None,
        announce: bool = True,
    ) -> None:
        super().__init__(loaded, dispatcher, emit, debug, announce=announce)
        self._deadline = deadline
        self._dependants = self._plan.dependants()
        self._progress = {
            name: _StepProgress(results=[None] * len(step.instances), remaining=len(step.instances))
            for name, step in self._plan.steps.items()
        }
        self._unfinished = len(self._plan.steps)
        self._queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self._group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for name in self._plan.order:
                    if not self._plan.steps[name].waits_for:
                        self._make_ready(name)
                for _ in range(self._plan.job.parallel):
                    group.create_task(self._runner())
        except BaseExceptionGroup as failures:
            # A failover stops every runner (the group cancels them); raise it as itself.
            found = failures.subgroup(FailoverDetected)
            if found is not None:
                raise _first(found) from None
            raise

    def summaries(self) -> dict[str, StepSummary]:
        result = {}
        for name in self._plan.order:
            progress = self._progress[name]
            finished = [r for r in progress.results if r is not None]
            duration = 0.0
            if progress.started is not None:
                duration = (progress.finished or time.monotonic()) - progress.started
            retries: Counter[str] = Counter()
            for instance in finished:
                for command in instance.commands:
                    if command.retries:
                        retries[command.name] += command.retries
            result[name] = StepSummary(
                name=name,
                state=progress.state,
                rc=sum(r.rc for r in finished),
                duration=duration,
                instances=len(progress.results),
                failed_instances=sum(1 for r in finished if r.failed),
                retries=tuple(retries.items()),
            )
        return result

    def _snapshot(self) -> dict[str, StepSnapshot]:
        from pgquartz.runner.conditions.views import StepSnapshot

        return {
            name: StepSnapshot(
                state=progress.state,
                instances=tuple(r for r in progress.results if r is not None),
            )
            for name, progress in self._progress.items()
        }

    def _make_ready(self, name: str) -> None:
        planned = self._plan.steps[name]
        if planned.rules:
            from pgquartz.runner.conditions import rules  # loaded already: the planner parsed them

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
        self._progress[name].state = StepState.READY
        if planned.step.gates is not None:
            assert self._group is not None
            self._group.create_task(self._open_gates(name))
            return
        self._start(name)

    def _start(self, name: str) -> None:
        planned = self._plan.steps[name]
        self._emit(events.StepStarted(step=name, instances=len(planned.instances)))
        for index in range(len(planned.instances)):
            self._queue.put_nowait((name, index))

    async def _open_gates(self, name: str) -> None:
        """A step's gates, before its first instance: open → start it; closed → skip or fail it."""
        step_gates = self._plan.steps[name].step.gates
        assert step_gates is not None
        verdict = await gates.wait_open(
            self._plan.job, step_gates, self._dispatcher, emit=self._emit, step=name, deadline=self._deadline
        )
        if verdict.opened:
            self._start(name)
            return
        reason = "gates closed: " + "; ".join(verdict.reasons)
        if step_gates.on_timeout is OnTimeout.SKIP:
            self._skip(name, reason)
            return
        progress = self._progress[name]
        progress.started = progress.finished = time.monotonic()
        gate = CommandResult(name="gates", state=CommandState.FAILED, rc=1, error=reason)
        for index, args in enumerate(self._plan.steps[name].instances):
            progress.results[index] = InstanceResult(step=name, args=args, commands=(gate,))
        progress.remaining = 0
        self._step_done(name)

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
                result = await self._run_reported(name, command, args)
                done.append(result)
                if not result.ok:
                    break
        except (asyncio.CancelledError, FailoverDetected) as stopped:
            error = "cancelled" if isinstance(stopped, asyncio.CancelledError) else str(stopped)
            progress.results[index] = InstanceResult(
                step=name,
                args=args,
                commands=(*done, CommandResult(name="", state=CommandState.CANCELLED, rc=1, error=error)),
            )
            raise
        progress.results[index] = InstanceResult(step=name, args=args, commands=tuple(done))
        progress.remaining -= 1
        if progress.remaining == 0:
            self._step_done(name)

    def _step_done(self, name: str) -> None:
        progress = self._progress[name]
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


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception of a (possibly nested) group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _retry_reporter(
    emit: events.Emit, step: str | None, args: Mapping[str, str], command: Command
) -> OnRetry:
    def report(attempt: RetryAttempt) -> None:
        emit(
            events.CommandRetried(
                step=step,
                instance=args,
                command=command.label,
                attempt=attempt.attempt,
                attempts=attempt.attempts,
                error=attempt.error,
                delay=attempt.delay,
            )
        )

    return report


async def _run_command(
    dispatcher: Dispatcher, command: Command, args: Mapping[str, str], on_retry: OnRetry
) -> CommandResult:
    try:
        return await dispatcher.run(command, args=args, on_retry=on_retry)
    except (asyncio.CancelledError, FailoverDetected):
        raise
    except Exception as error:  # an executor bug must fail this command, not the whole run
        return CommandResult(
            name=command.label,
            state=CommandState.FAILED,
            rc=1,
            started=datetime.datetime.now(datetime.UTC),
            error=f"internal error: {type(error).__name__}: {error}",
        )


class _Checks(_Phase):
    """Checks in file order, each matrix instance in turn; the first failure ends them."""

    def __init__(
        self,
        loaded: LoadedJob,
        dispatcher: Dispatcher,
        emit: events.Emit,
        debug: bool,
        *,
        announce: bool = True,
    ) -> None:
        super().__init__(loaded, dispatcher, emit, debug, announce=announce)
        self.retries: Counter[str] = Counter()

    async def run(self) -> str | None:
        """Run the checks; return a description of the first failure, or None."""
        emit = self._emit
        if not self._plan.checks:
            return None
        emit(events.ChecksStarted(checks=sum(len(check.instances) for check in self._plan.checks)))
        for planned in self._plan.checks:
            check = planned.check
            for args in planned.instances:
                result = await self._run_reported(None, check, args)
                if result.retries:
                    self.retries[check.label] += result.retries
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
