"""One PostgreSQL session, through psycopg 3: what the PostgreSQL executor needs of it and nothing more.

The runner's SQL is text in, text out. A command's statements are sent as
written; ``:name`` arguments arrive here as ``$n`` parameters (an
:class:`psycopg.AsyncRawCursor` takes PostgreSQL's own placeholders, so a ``%``
in a statement is just a ``%``), their values Python strings, which psycopg
sends as text of unknown type for the server to infer or cast. A query without
parameters goes by the simple protocol, so a body of several statements runs as
written, as psql runs it. Rows are read from the results as libpq holds them
(``cursor.pgresult``, values in PostgreSQL's text format): no type loaders, no
row objects.

Sessions are in autocommit (``VACUUM``, ``CREATE INDEX CONCURRENTLY`` need it)
and never prepare statements (``prepare_threshold=None``: a pooler in
transaction mode, such as PgBouncer's, could not follow them). psycopg resolves
host names without blocking the loop, gives each host its own
``connect_timeout`` and discards the server's notices (no notice handler is
registered). A task cancelled while a query runs makes psycopg cancel the
query on the server before the cancellation goes on; the executor then closes
the session (:meth:`Session.close`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_IDLE = pq.TransactionStatus.IDLE
_INERROR = pq.TransactionStatus.INERROR
_ACTIVE = pq.TransactionStatus.ACTIVE
_OK = pq.ConnStatus.OK

COPY_REFUSED = (
    "COPY to or from the client is not supported in a command: use COPY to or from a file,"
    " or psql in a shell command"
)


class SessionError(Exception):
    """What psycopg or the server reported; ``sqlstate`` is the server's code (None: the client's own
    error, or a session that was lost)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


async def connect(params: Mapping[str, str]) -> Session:
    """A session with these libpq keywords (each a value of its own: no connection string is read
    from one); raises :class:`SessionError` with libpq's words when it cannot."""
    try:
        conninfo = make_conninfo("", **params)  # each value quoted: none is read as a connection string
        connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)
    except psycopg.Error as error:
        raise _session_error(error) from None
    return Session(connection)


class Session:
    """A connection, and what its server last reported."""

    def __init__(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._connection = connection
        self._cursor = psycopg.AsyncRawCursor(connection)
        self._info = connection.info

    @property
    def usable(self) -> bool:
        """Whether a query can be sent: open, not broken, and not stuck in a COPY."""
        connection = self._connection
        return not connection.closed and not connection.broken and self._info.status == _OK

    @property
    def idle(self) -> bool:
        """Outside a transaction block (in autocommit: between statements, or after COMMIT)."""
        return self._info.transaction_status == _IDLE

    @property
    def in_failed_transaction(self) -> bool:
        return self._info.transaction_status == _INERROR

    @property
    def running(self) -> bool:
        """A query is under way (or a COPY the session will never finish)."""
        return self._info.transaction_status == _ACTIVE

    @property
    def backend_pid(self) -> int:
        return self._info.backend_pid

    def parameter_status(self, name: str) -> str | None:
        """A setting the server reports (``in_hot_standby``, ``server_version``), as last reported."""
        return self._info.parameter_status(name)

    async def execute(self, query: str, params: Sequence[str] | None = None) -> list[pq.abc.PGresult]:
        """Every result of one query (the row sets among them in text); the server's error raised as
        :class:`SessionError`, a COPY to or from the client refused (and the session left unusable)."""
        if "\0" in query:  # libpq takes C strings: "select 1\0; drop …" would run as "select 1"
            raise SessionError("a query cannot contain a NUL character")
        cursor = self._cursor
        try:
            await cursor.execute(query, params or None)
        except psycopg.Error as error:
            if error.sqlstate is None and self.running:  # psycopg refused a COPY the server began
                await self.close()
                raise SessionError(COPY_REFUSED) from None
            raise _session_error(error) from None
        results = []
        while (result := cursor.pgresult) is not None:
            results.append(result)
            if not cursor.nextset():
                break
        return results

    async def first_row(
        self, query: str, params: Sequence[str] | None = None
    ) -> tuple[str | None, ...] | None:
        """The first row of a query of the runner's own, as text (None: no row)."""
        for result in await self.execute(query, params):
            for values in rows(result):
                return tuple(values)
        return None

    async def cancel(self, *, give_up_after: float) -> None:
        """Ask the server to cancel what runs; raises :class:`SessionError` if it cannot be asked within
        ``give_up_after`` seconds (the server may still not cancel: the query's answer says)."""
        try:
            await self._connection.cancel_safe(timeout=give_up_after)
        except psycopg.Error as error:
            raise _session_error(error) from None

    async def close(self) -> None:
        await self._connection.close()


def columns(result: pq.abc.PGresult) -> list[str]:
    return [(result.fname(index) or b"").decode() for index in range(result.nfields)]


def rows(result: pq.abc.PGresult) -> Iterator[list[str | None]]:
    """The rows of a row set, values as PostgreSQL's text (None for NULL); nothing for other results."""
    if result.status != _TUPLES_OK:
        return
    fields = range(result.nfields)
    value = result.get_value
    for row in range(result.ntuples):
        yield [None if (found := value(row, field)) is None else found.decode() for field in fields]


def _session_error(error: psycopg.Error) -> SessionError:
    text = str(error).strip() or type(error).__name__
    return SessionError(text, error.sqlstate)
