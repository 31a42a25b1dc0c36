"""Routes each command to the executor for its ``type``: bash for ``shell``, else its connection.

The engine asks one :class:`Dispatcher` to run a command of an instance; the
dispatcher reads the body (inline or file), adds the instance's arguments
(``PGQ_INSTANCE_*`` for shell) and any run-wide variables (such as the lock's
fencing token), and never raises for a command's failure: every outcome is a
:class:`CommandResult`.
"""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import Mapping
from typing import Protocol

from pgquartz.runner.executors.shell import ShellExecutor
from pgquartz.runner.loader.load import resolve_file
from pgquartz.runner.model.job import Command
from pgquartz.runner.model.results import CommandResult, CommandState
from pgquartz.runner.plan import matrix


class ConnectionExecutor(Protocol):
    """Runs a command against a named connection (PostgreSQL)."""

    async def run(self, command: Command, *, body: str, args: Mapping[str, str]) -> CommandResult: ...

    async def role(self) -> str:
        """The role of the server reached now (``primary``/``standby``); raises when unreachable."""
        ...

    async def aclose(self) -> None: ...


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
        """Named arguments every SQL command gets (``:lock_revision``)."""

    def use_run_variables(self, variables: Mapping[str, str]) -> None:
        """Give commands run-wide variables: to shell as environment, the fencing token to SQL."""
        self.run_env.update(variables)
        if "PGQ_LOCK_REVISION" in variables:
            self.run_args["lock_revision"] = variables["PGQ_LOCK_REVISION"]

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

    async def run(self, command: Command, *, args: Mapping[str, str]) -> CommandResult:
        if command.is_shell:
            return await self._shell.run(
                name=command.label,
                inline=command.inline,
                file=self.file_of(command) if command.file is not None else None,
                env={**self.run_env, **matrix.environment(args)},
            )
        executor = self._connections.get(command.type)
        if executor is None:
            return _failed(command, f"no executor for connection {command.type!r}")
        try:
            body = command.inline if command.inline is not None else self.file_of(command).read_text()
        except OSError as error:
            return _failed(command, f"cannot read {command.file}: {error}")
        return await executor.run(command, body=body, args={**args, **self.run_args})


def _failed(command: Command, error: str) -> CommandResult:
    return CommandResult(
        name=command.label,
        state=CommandState.FAILED,
        rc=1,
        started=datetime.datetime.now(datetime.UTC),
        error=error,
    )
