"""Routes each command to the executor for its ``type``: bash for ``shell``, else its connection.

The engine asks one :class:`Dispatcher` to run a command of an instance; the
dispatcher reads the body (inline or file), adds the instance's arguments
(``PGQ_INSTANCE_*`` for shell) and any run-wide variables (such as the lock's
fencing token), and never raises for a command's failure: every outcome is a
:class:`CommandResult`. A shell command's ``retry.exitCodes`` are applied here
(the PostgreSQL executor applies SQL retries itself: it knows sessions and
statements); each retried attempt is reported through ``on_retry``.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import random
from collections.abc import Mapping
from typing import Protocol

from pgquartz.runner.executors.identity import FailoverSeen, OnFailoverSeen
from pgquartz.runner.executors.shell import ShellExecutor
from pgquartz.runner.loader.load import resolve_file
from pgquartz.runner.model.job import Command
from pgquartz.runner.model.results import CommandResult, CommandState, OnRetry, RetryAttempt
from pgquartz.runner.plan import matrix


class ConnectionExecutor(Protocol):
    """Runs a command against a named connection (PostgreSQL)."""

    async def run(
        self, command: Command, *, body: str, args: Mapping[str, str], on_retry: OnRetry
    ) -> CommandResult: ...

    async def role(self) -> str:
        """The role of the server reached now (``primary``/``standby``); raises when unreachable."""
        ...

    async def fetch(self, sql: str, params: tuple[str, ...] | None = None) -> tuple[str | None, ...] | None:
        """One row of the runner's own query (a gate's); raises when it cannot be answered."""
        ...

    async def current_role(self) -> str: ...

    @property
    def backend_pids(self) -> list[int]:
        """The server processes of this connection's sessions."""
        ...

    async def aclose(self) -> None: ...


def _no_retry_report(attempt: RetryAttempt) -> None:
    return None


class Dispatcher:
    def __init__(
        self,
        *,
        workdir: pathlib.Path,
        shell: ShellExecutor,
        connections: Mapping[str, ConnectionExecutor] | None = None,
    ) -> None:
        self._workdir = workdir
        self._shell = shell
        self._connections = dict(connections or {})
        self.run_env: dict[str, str] = {}
        """Variables every shell command gets for the rest of the run (e.g. ``PGQ_LOCK_REVISION``)."""
        self.run_args: dict[str, str] = {}
        """Named arguments every SQL command gets (``:lock_revision``, ``:budget_slot``)."""
        self._rng = random.Random()
        self.on_failover: OnFailoverSeen = lambda seen: None
        """Set by the engine: told of every failover an executor sees (executors call
        :meth:`report_failover`)."""

    def report_failover(self, seen: FailoverSeen) -> None:
        self.on_failover(seen)

    def use_run_variables(self, variables: Mapping[str, str]) -> None:
        """Give commands run-wide variables: to shell as environment, the fencing token to SQL."""
        self.run_env.update(variables)
        for variable, argument in (
            ("PGQ_LOCK_REVISION", "lock_revision"),
            ("PGQ_BUDGET_SLOT", "budget_slot"),
        ):
            if variable in variables:
                self.run_args[argument] = variables[variable]

    @property
    def connections(self) -> Mapping[str, ConnectionExecutor]:
        return self._connections

    async def aclose(self) -> None:
        """Close every connection's sessions."""
        for executor in self._connections.values():
            await executor.aclose()

    def file_of(self, command: Command) -> pathlib.Path:
        assert command.file is not None
        return resolve_file(command.file, self._workdir)

    async def run(
        self, command: Command, *, args: Mapping[str, str], on_retry: OnRetry = _no_retry_report
    ) -> CommandResult:
        if command.is_shell:
            return await self._run_shell(command, args, on_retry)
        executor = self._connections.get(command.type)
        if executor is None:
            return _failed(command, f"no executor for connection {command.type!r}")
        try:
            body = command.inline if command.inline is not None else self.file_of(command).read_text()
        except OSError as error:
            return _failed(command, f"cannot read {command.file}: {error}")
        return await executor.run(command, body=body, args={**args, **self.run_args}, on_retry=on_retry)

    async def _run_shell(self, command: Command, args: Mapping[str, str], on_retry: OnRetry) -> CommandResult:
        retry = command.retry
        attempt = 1
        while True:
            result = await self._shell.run(
                name=command.label,
                inline=command.inline,
                file=self.file_of(command) if command.file is not None else None,
                env={**self.run_env, **matrix.environment(args)},
            )
            if retry is None or attempt >= retry.attempts or not retry.retries_exit_code(result.rc):
                return result.replace(attempts=attempt) if attempt > 1 else result
            pause = retry.delay(attempt, self._rng)
            error = result.error or f"exit code {result.rc}"
            on_retry(RetryAttempt(attempt=attempt, attempts=retry.attempts, error=error, delay=pause))
            await asyncio.sleep(pause)
            attempt += 1


def _failed(command: Command, error: str) -> CommandResult:
    return CommandResult(
        name=command.label,
        state=CommandState.FAILED,
        rc=1,
        started=datetime.datetime.now(datetime.UTC),
        error=error,
    )
