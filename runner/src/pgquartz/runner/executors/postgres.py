"""PostgreSQL commands: queries against a named connection, with roles, bounded output and cancellation.

One :class:`PostgresExecutor` serves one connection name for a whole run. It
opens sessions lazily, keeps them for reuse, and never holds more than
``max_sessions`` (the job's ``parallel``): a job with ``parallel: 1`` uses one
session for every command, as PgQuartz does; parallel instances naming the same
connection get sessions of their own instead of queueing behind one.

Sessions run in autocommit (``VACUUM``, ``CREATE INDEX CONCURRENTLY`` and
friends need it), with ``application_name`` set to identify the job in
``pg_stat_activity``. Each new session learns its server's identity (role,
cluster, timeline: :mod:`~pgquartz.runner.executors.identity`); a command whose
expected role (its own ``role``, else the connection's) differs from the
server's is skipped, never run. A session that reaches another server than the
run's first (a failover) is reported, and with the connection's ``onFailover:
abort`` it stops the run (:class:`~pgquartz.runner.executors.identity.FailoverDetected`).

A command's ``retry`` (else the connection's) runs it again after the SQL
errors it lists, on a new session if the old one was lost; in ``batchMode`` the
statements that already committed are not run again: it resumes at the failed
statement, or at the one that opened the transaction block it failed in.

Sessions are psycopg's (:mod:`~pgquartz.runner.executors.pgsession`).

``:name`` arguments become server-side parameters (``$n``, sent as text of
unknown type so the server infers or casts them); a value never becomes SQL
text. Rows are rendered as PgQuartz's manual describes, one line per row of
``{column}={value}`` pairs (values in PostgreSQL's text format, ``'`` doubled as
the manual says, NULL as a bare ``NULL``), into the same bounded capture as
shell output; the rendered text is bounded, the result itself is held by libpq
while it is rendered (keep result sets small, as PgQuartz's manual asks).

Cancelling a command (timeout, signal, lost lock) cancels the query on the
server, then closes that session: no query is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import os
import random
import time
from collections.abc import Mapping
from typing import Any

from pgquartz.runner import secrets
from pgquartz.runner.executors import identity, pgsession, sqltext
from pgquartz.runner.executors.capture import DEFAULT_LIMITS, BoundedCapture, Limits
from pgquartz.runner.executors.identity import FailoverDetected, FailoverSeen, Identity, OnFailoverSeen
from pgquartz.runner.executors.pgsession import Session, SessionError
from pgquartz.runner.model import records
from pgquartz.runner.model.job import Command, Connection, OnFailover, Role
from pgquartz.runner.model.results import CommandResult, CommandState, OnRetry, RetryAttempt

DEFAULT_CONNECT_TIMEOUT = "10"


class ConnectionFailed(Exception):
    """The server could not be reached or refused us; the message is safe to show."""


class _SessionState:
    """A session's server as last asked, and when (monotonic)."""

    __slots__ = ("checked", "identity")

    def __init__(self, identity: Identity, checked: float) -> None:
        self.identity = identity
        self.checked = checked


class _Ended(records.Record, kw_only=False):
    """How one attempt ended: its state, and for a failure its first line and SQLSTATE (None: lost)."""

    state: CommandState
    error: str | None = None
    sqlstate: str | None = None


class _Progress:
    """How far a command got, so that a retry in batch mode resumes instead of starting over."""

    __slots__ = ("resume_at",)

    def __init__(self) -> None:
        self.resume_at = 0


_SUCCEEDED = _Ended(CommandState.SUCCEEDED)


class PostgresExecutor:
    """Runs commands against one named connection."""

    def __init__(
        self,
        *,
        name: str,
        connection: Connection,
        application_name: str,
        max_sessions: int = 1,
        limits: Limits = DEFAULT_LIMITS,
        on_failover: OnFailoverSeen = lambda seen: None,
    ) -> None:
        self.name = name
        self._connection = connection
        self._application_name = application_name
        self._limits = limits
        self._on_failover = on_failover
        self._slots = asyncio.Semaphore(max(1, max_sessions))
        self._idle: list[Session] = []
        self._open: set[Session] = set()
        self._states: dict[int, _SessionState] = {}
        self._reference: Identity | None = None
        self._watch_each_command = (
            connection.role is not Role.ALL or connection.failover_policy is OnFailover.ABORT
        )
        self._rng = random.Random()
        self._secrets: list[str] = []

    # -- sessions ---------------------------------------------------------------------------------

    def _params(self) -> dict[str, str]:
        params = dict(self._connection.conn_params)
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            params["application_name"] = self._application_name
        params.setdefault("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))
        if "client_encoding" not in params and "PGCLIENTENCODING" not in os.environ:
            params["client_encoding"] = "UTF8"  # rows are decoded as UTF-8, whatever the database's
        password = self._password()
        if password is not None:
            params["password"] = password
        if params.get("password"):
            self._secrets = [params["password"]]
        return params

    def _password(self) -> str | None:
        connection = self._connection
        try:
            return secrets.read(file=connection.password_file, env=connection.password_env, what="password")
        except secrets.SecretUnavailable as error:
            raise ConnectionFailed(str(error)) from None

    async def _session(self) -> Session:
        while self._idle:
            session = self._idle.pop()
            if session.usable:
                return session
            await self._discard(session)
        try:
            session = await pgsession.connect(self._params())
        except SessionError as error:
            raise ConnectionFailed(
                self._scrub(f"cannot connect to {self.name!r}: {_message(error)}")
            ) from None
        self._open.add(session)
        try:
            found = await _identify(session)
        except SessionError as error:
            await self._discard(session)
            raise ConnectionFailed(self._scrub(f"connection {self.name!r}: {_message(error)}")) from None
        self._states[id(session)] = _SessionState(found, time.monotonic())
        self._compare(found)
        return session

    async def _checked_session(self) -> Session:
        """A session for a command; on a watched connection, one whose server was checked just now.

        A session found dead while checking (its server restarted while it sat idle) is replaced:
        the command has not run yet.
        """
        session = await self._session()
        if not self._watch_each_command or self._known(session):
            return session
        try:
            await self._recheck(session)
        except SessionError as error:
            if session.usable:
                await self._discard(session)
                raise ConnectionFailed(self._scrub(f"connection {self.name!r}: {_message(error)}")) from None
            await self._discard(session)
            session = await self._session()
        return session

    def _known(self, session: Session) -> bool:
        """Whether the session's server need not be asked again: asked lately, and reporting the same role.

        Read from what the server last reported (``in_hot_standby``, which libpq keeps), before
        every command of a watched connection: no query, no wait.
        """
        state = self._states[id(session)]
        if time.monotonic() - state.checked >= identity.RECHECK_SECONDS:
            return False
        reported = identity.reported_role(session.parameter_status("in_hot_standby"))
        return reported == state.identity.role

    async def _recheck(self, session: Session) -> None:
        """Before a command on a session already open: has its server changed since it was asked?"""
        if self._known(session):
            return
        state = self._states[id(session)]
        state.identity = await _identify(session)
        state.checked = time.monotonic()
        self._compare(state.identity)

    def _compare(self, found: Identity) -> None:
        """Measure a session's server against the run's first; apply the policy to a difference."""
        if self._reference is None:
            self._reference = found
            return
        changed = identity.changes(self._reference, found)
        if not changed:
            return
        before, policy = self._reference, self._connection.failover_policy
        seen = FailoverSeen(connection=self.name, before=before, after=found, changes=changed, action=policy)
        self._on_failover(seen)
        if policy is OnFailover.ABORT:
            raise FailoverDetected(self.name, before, found, changed)
        self._reference = found

    async def _discard(self, session: Session) -> None:
        self._open.discard(session)
        self._states.pop(id(session), None)
        with contextlib.suppress(Exception):  # closing a lost session can fail: it is gone either way
            await session.close()

    async def role(self) -> str:
        """The role of the server this connection reaches now: ``primary`` or ``standby``."""
        async with self._slots:
            session = await self._session()
            role = self._states[id(session)].identity.role
            self._idle.append(session)
            return role

    async def fetch(self, sql: str, params: tuple[str, ...] | None = None) -> tuple[str | None, ...] | None:
        """One row of a query of the runner's own (a gate's: ``$n`` parameters, given as text), as
        text; raises :class:`ConnectionFailed`."""
        async with self._slots:
            session = await self._checked_session()
            try:
                row = await session.first_row(sql, params)
            except SessionError as error:
                await self._discard(session)
                raise ConnectionFailed(self._scrub(f"connection {self.name!r}: {_message(error)}")) from None
            self._idle.append(session)
            return row

    async def current_role(self) -> str:
        """The role of the server a session of this connection reaches now (checked again if stale)."""
        async with self._slots:
            session = await self._checked_session()
            self._idle.append(session)
            return self._states[id(session)].identity.role

    @property
    def backend_pids(self) -> list[int]:
        """The server processes of this connection's open sessions (gates ignore their transactions)."""
        return [session.backend_pid for session in self._open if session.usable]

    async def aclose(self) -> None:
        """Close every session (at the end of the run)."""
        for session in list(self._open):
            await self._discard(session)
        self._idle.clear()

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- commands ---------------------------------------------------------------------------------

    async def run(
        self,
        command: Command,
        *,
        body: str,
        args: Mapping[str, str],
        on_retry: OnRetry = lambda attempt: None,
    ) -> CommandResult:
        started = datetime.datetime.now(datetime.UTC)
        clock = time.monotonic()
        stdout = BoundedCapture(self._limits)
        stderr = BoundedCapture(self._limits)
        retry = command.retry or self._connection.retry
        progress = _Progress()
        attempt = 1

        def result(state: CommandState, rc: int, error: str | None = None) -> CommandResult:
            return CommandResult(
                name=command.label,
                state=state,
                rc=rc,
                stdout=stdout.result(),
                stderr=stderr.result(),
                started=started,
                duration=time.monotonic() - clock,
                error=error,
                attempts=attempt,
            )

        while True:
            ended = await self._attempt(
                command=command, body=body, args=args, stdout=stdout, stderr=stderr, progress=progress
            )
            if ended.state is not CommandState.FAILED:
                return result(ended.state, 0, ended.error)
            if retry is None or attempt >= retry.attempts or not retry.retries_sqlstate(ended.sqlstate):
                return result(CommandState.FAILED, 1, ended.error)
            pause = retry.delay(attempt, self._rng)
            on_retry(
                RetryAttempt(attempt=attempt, attempts=retry.attempts, error=ended.error or "", delay=pause)
            )
            await asyncio.sleep(pause)
            attempt += 1
            if not command.batch_mode:
                stdout = BoundedCapture(self._limits)  # the body runs again from its start

    async def _attempt(
        self,
        *,
        command: Command,
        body: str,
        args: Mapping[str, str],
        stdout: BoundedCapture,
        stderr: BoundedCapture,
        progress: _Progress,
    ) -> _Ended:
        """Run the command once."""
        async with self._slots:
            try:
                session = await self._checked_session()
            except ConnectionFailed as error:
                stderr.feed(f"{error}\n".encode())
                return _Ended(CommandState.FAILED, str(error))  # no session: like a lost one
            keep = True
            try:
                expected = command.role or self._connection.role
                actual = self._states[id(session)].identity.role
                if expected is not Role.ALL and expected.value != actual:
                    reason = f"expects a {expected.value}, {self.name!r} reaches a {actual}"
                    return _Ended(CommandState.SKIPPED, reason)
                await self._execute(
                    session=session, command=command, body=body, args=args, out=stdout, progress=progress
                )
                return _SUCCEEDED
            except asyncio.CancelledError:
                keep = False
                await _cancel(session)
                raise
            except FailoverDetected:
                keep = False
                raise
            except SessionError as error:
                keep = session.usable
                if keep and session.in_failed_transaction:
                    keep = await _rollback(session) if command.retry or self._connection.retry else True
                message = self._scrub(_message(error))
                stderr.feed(f"{message}\n".encode())
                # sqlstate None: the client's own error, or it saw the session go
                return _Ended(CommandState.FAILED, message.splitlines()[0], error.sqlstate)
            finally:
                if keep and session.usable:
                    self._idle.append(session)
                else:
                    await asyncio.shield(self._discard(session))

    async def _execute(
        self,
        *,
        session: Session,
        command: Command,
        body: str,
        args: Mapping[str, str],
        out: BoundedCapture,
        progress: _Progress,
    ) -> None:
        statements = _statements(body)
        if command.batch_mode:
            opened = progress.resume_at
            for index in range(progress.resume_at, len(statements)):
                if session.idle:
                    opened = index  # a block this statement opens would be rolled back with it
                progress.resume_at = opened
                await self._run_statement(session, statements[index], args, out)
                if session.idle:
                    progress.resume_at = index + 1
        elif len(statements) > 1:
            query, params = _bind(body, args)
            if params:
                raise SessionError(
                    "a body with several statements cannot take :arguments; set batchMode: true to run them"
                    " one at a time, or give each statement its own command"
                )
            await _send(session, query, [], out)  # no parameters: the simple protocol runs them all
        elif statements:
            await self._run_statement(session, statements[0], args, out)

    async def _run_statement(
        self,
        session: Session,
        statement: str,
        args: Mapping[str, str],
        out: BoundedCapture,
    ) -> None:
        query, params = _bind(statement, args)
        await _send(session, query, params, out)


async def _identify(session: Session) -> Identity:
    """The session's server: role, cluster and timeline (the role alone for a user who may not ask)."""
    try:
        row = await session.first_row(identity.QUERY)
    except SessionError as error:
        if error.sqlstate != _INSUFFICIENT_PRIVILEGE:
            raise
        row = await session.first_row(identity.FALLBACK_QUERY)
    if row is None:
        raise SessionError("the server's identity query returned no row")
    return identity.from_row(row)


async def _rollback(session: Session) -> bool:
    """End a failed transaction block before a retry; False if the session is no use any more."""
    try:
        await session.execute("rollback")
    except SessionError:
        return False
    return True


async def _send(session: Session, query: str, params: list[str], out: BoundedCapture) -> None:
    """Run one query of a command and render every row set it returns (values in PostgreSQL's text)."""
    for result in await session.execute(query, params):
        names = pgsession.columns(result)
        for values in pgsession.rows(result):
            out.feed(_render(names, values))


_INSUFFICIENT_PRIVILEGE = "42501"


@functools.lru_cache(maxsize=4096)
def _statements(body: str) -> list[str]:
    """Parsed once per distinct body: a matrix runs the same command many times."""
    return sqltext.split_statements(body)


def _bind(statement: str, args: Mapping[str, str]) -> tuple[str, list[str]]:
    query, names = _bind_names(statement, tuple(args))
    return query, [args[name] for name in names]


@functools.lru_cache(maxsize=4096)
def _bind_names(statement: str, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The query with ``$n`` placeholders and the argument names in parameter order."""
    query, order = sqltext.bind_named(statement, {name: name for name in names})
    return query, tuple(order)


def _render(names: list[str], row: Any) -> bytes:
    parts = []
    for name, value in zip(names, row, strict=True):
        shown = "NULL" if value is None else "{" + str(value).replace("'", "''") + "}"
        parts.append(f"{{{name}}}={shown}")
    return (" ".join(parts) + "\n").encode()


def _message(error: SessionError) -> str:
    text = str(error).strip() or type(error).__name__
    return f"ERROR {error.sqlstate}: {text}" if error.sqlstate else text


async def _cancel(session: Session) -> None:
    """Make sure the query a cancelled command ran is cancelled on the server (psycopg asks, as the
    cancellation passes it; a second one can cut that short); shielded, so a further cancellation
    cannot skip it."""

    async def cancel() -> None:
        if not session.usable or not session.running:
            return  # nothing runs
        with contextlib.suppress(Exception):
            await session.cancel(give_up_after=5.0)

    await asyncio.shield(cancel())
