"""libpq, called directly: the part of PostgreSQL's client library that SQL commands need.

The runner's SQL is text in, text out: it sends a command's statements as
written (``:name`` arguments as ``$n`` parameters of unknown type) and shows
rows in PostgreSQL's own text format. None of a driver's type adaptation,
cursors or pooling is used, and psycopg's package costs 0.1-0.2 s of every SQL
job's start to import (more than ``psql`` takes to run 3000 statements), so
the runner binds the dozen libpq calls it uses through :mod:`ctypes` (some
10 ms to load) and waits for their sockets on its own event loop
(:mod:`pgquartz.runner.executors.libpqwait`).

The library is the first of: the file named by ``PGQUARTZ_LIBPQ``; the libpq
that the ``psycopg-binary`` wheel (a dependency) ships, a recent libpq built
with SSL and GSSAPI; the system's ``libpq.so.5``.

Every connection is non-blocking. Host names are resolved on the loop's
resolver before libpq sees them (libpq would resolve them blocking, holding
the whole runner while DNS does not answer), and ``connect_timeout`` bounds the
attempt on each host, as it does in libpq's blocking calls. Notices (``RAISE
NOTICE``, "skipping") are discarded rather than written to the runner's stderr,
as psycopg did. Results are :class:`Result` objects that their owner clears
(:meth:`Result.clear`, in a ``finally``): a finaliser on each would cost every
statement a call.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import glob
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from typing import Any

# Connection and polling states (libpq-fe.h)
CONNECTION_OK = 0
CONNECTION_BAD = 1
POLLING_FAILED = 0
POLLING_READING = 1
POLLING_WRITING = 2
POLLING_OK = 3

# Result states
EMPTY_QUERY = 0
COMMAND_OK = 1
TUPLES_OK = 2
COPY_OUT = 3
COPY_IN = 4
BAD_RESPONSE = 5
NONFATAL_ERROR = 6
FATAL_ERROR = 7
COPY_BOTH = 8
COPY_STATES = frozenset((COPY_OUT, COPY_IN, COPY_BOTH))
_UNSOUND_STATES = frozenset((FATAL_ERROR, BAD_RESPONSE))

# Transaction states
TRANS_IDLE = 0
TRANS_ACTIVE = 1
TRANS_INTRANS = 2
TRANS_INERROR = 3
TRANS_UNKNOWN = 4

# Diagnostic fields (postgres_ext.h)
DIAG_SEVERITY = ord("S")
DIAG_SQLSTATE = ord("C")
DIAG_MESSAGE_PRIMARY = ord("M")

DEFAULT_PORT = "5432"


class Error(Exception):
    """What libpq or the server reported; ``sqlstate`` is the server's code (None: the client's own
    error, such as a connection that could not be made or was lost)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class LibraryMissing(Error):
    """No libpq could be loaded."""


def _candidates() -> list[str]:
    named = os.environ.get("PGQUARTZ_LIBPQ")
    if named:
        return [named]
    found = []
    for entry in sys.path:
        found.extend(sorted(glob.glob(os.path.join(entry or ".", "psycopg_binary.libs", "libpq-*.so*"))))
    return [*found, "libpq.so.5", "libpq.dylib"]


_NoticeProcessor = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


def _ignore_notice(arg: Any, message: bytes) -> None:
    return None


_discard_notice = _NoticeProcessor(_ignore_notice)  # kept here: libpq holds only its address


class _ConninfoOption(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


_P = ctypes.c_void_p
_S = ctypes.c_char_p
_I = ctypes.c_int

_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "PQlibVersion": (_I, []),
    "PQconnectStartParams": (_P, [ctypes.POINTER(_S), ctypes.POINTER(_S), _I]),
    "PQconnectPoll": (_I, [_P]),
    "PQstatus": (_I, [_P]),
    "PQsocket": (_I, [_P]),
    "PQerrorMessage": (_S, [_P]),
    "PQfinish": (None, [_P]),
    "PQsetnonblocking": (_I, [_P, _I]),
    "PQsetNoticeProcessor": (_P, [_P, _NoticeProcessor, _P]),
    "PQtransactionStatus": (_I, [_P]),
    "PQparameterStatus": (_S, [_P, _S]),
    "PQbackendPID": (_I, [_P]),
    "PQsendQuery": (_I, [_P, _S]),
    "PQsendQueryParams": (
        _I,
        [_P, _S, _I, _P, ctypes.POINTER(_S), _P, _P, _I],
    ),
    "PQflush": (_I, [_P]),
    "PQconsumeInput": (_I, [_P]),
    "PQisBusy": (_I, [_P]),
    "PQgetResult": (_P, [_P]),
    "PQresultStatus": (_I, [_P]),
    "PQresultErrorMessage": (_S, [_P]),
    "PQresultErrorField": (_S, [_P, _I]),
    "PQntuples": (_I, [_P]),
    "PQnfields": (_I, [_P]),
    "PQfname": (_S, [_P, _I]),
    "PQgetvalue": (_S, [_P, _I, _I]),
    "PQgetisnull": (_I, [_P, _I, _I]),
    "PQclear": (None, [_P]),
    "PQconndefaults": (ctypes.POINTER(_ConninfoOption), []),
    "PQconninfoFree": (None, [ctypes.POINTER(_ConninfoOption)]),
    "PQgetCancel": (_P, [_P]),
    "PQcancel": (_I, [_P, _S, _I]),
    "PQfreeCancel": (None, [_P]),
}

_NONBLOCKING_CANCEL: dict[str, tuple[Any, list[Any]]] = {  # libpq 17 and later
    "PQcancelCreate": (_P, [_P]),
    "PQcancelStart": (_I, [_P]),
    "PQcancelPoll": (_I, [_P]),
    "PQcancelSocket": (_I, [_P]),
    "PQcancelErrorMessage": (_S, [_P]),
    "PQcancelFinish": (None, [_P]),
}


_RELEASING_THE_GIL = frozenset(
    ("PQconnectStartParams", "PQconnectPoll", "PQfinish", "PQconndefaults", "PQcancel", *_NONBLOCKING_CANCEL)
)
"""Calls that may wait (connecting, the blocking cancel) or are rare: through ``CDLL``, which lets
other threads run meanwhile. The rest never wait on a non-blocking connection, and are called
through ``PyDLL``, which keeps the GIL: some 15 % less of ctypes' cost on each of the dozen calls
a statement makes."""


class _Library:
    """The loaded library with its functions declared (argument and result types)."""

    def __init__(self, path: str) -> None:
        self.path = path
        releasing, holding = ctypes.CDLL(path), ctypes.PyDLL(path)
        self.nonblocking_cancel = hasattr(releasing, "PQcancelCreate")
        declared = {**_PROTOTYPES, **(_NONBLOCKING_CANCEL if self.nonblocking_cancel else {})}
        for name, (restype, argtypes) in declared.items():
            function = getattr(releasing if name in _RELEASING_THE_GIL else holding, name)
            function.restype, function.argtypes = restype, argtypes
            setattr(self, name, function)

    def __getattr__(self, name: str) -> Any:  # the declared functions, for the type checker
        raise AttributeError(name)


@functools.cache
def library() -> _Library:
    """libpq, loaded once per process (raises :class:`LibraryMissing` when there is none)."""
    tried = []
    for candidate in _candidates():
        try:
            return _Library(candidate)
        except OSError as error:
            tried.append(f"{candidate}: {error}")
    raise LibraryMissing(
        "cannot load libpq (install psycopg-binary, or set PGQUARTZ_LIBPQ): " + "; ".join(tried)
    )


def version() -> int:
    """The loaded libpq's version, as ``PQlibVersion`` gives it (180001 for 18.1)."""
    return int(library().PQlibVersion())


def keywords() -> list[str]:
    """Every connection keyword this libpq knows (``host``, ``sslmode``, ...)."""
    lib = library()
    options = lib.PQconndefaults()
    if not options:
        raise MemoryError("libpq could not list its connection options")
    try:
        found = []
        index = 0
        while options[index].keyword is not None:
            found.append(options[index].keyword.decode())
            index += 1
        return found
    finally:
        lib.PQconninfoFree(options)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


class Result:
    """One result of a query: its state, rows of text values or the server's error."""

    __slots__ = ("_lib", "_nfields", "_ptr", "status")

    def __init__(self, lib: _Library, ptr: int) -> None:
        self._lib = lib
        self._ptr: int | None = ptr
        self._nfields = -1
        self.status: int = lib.PQresultStatus(ptr)

    @property
    def ntuples(self) -> int:
        return int(self._lib.PQntuples(self._ptr))

    @property
    def nfields(self) -> int:
        if self._nfields < 0:
            self._nfields = int(self._lib.PQnfields(self._ptr))
        return self._nfields

    def columns(self) -> list[str]:
        """The names of the result's columns."""
        ptr, fname = self._ptr, self._lib.PQfname
        return [_text(fname(ptr, column)) for column in range(self.nfields)]

    def rows(self) -> Iterator[list[str | None]]:
        """Each row's values in PostgreSQL's text format (None: NULL), read as they are needed."""
        lib, ptr = self._lib, self._ptr
        getvalue, getisnull = lib.PQgetvalue, lib.PQgetisnull
        columns = range(self.nfields)
        for row in range(lib.PQntuples(ptr)):
            values: list[str | None] = []
            for column in columns:
                value = getvalue(ptr, row, column)
                if value:
                    values.append(value.decode("utf-8", errors="replace"))
                else:  # libpq gives NULL as an empty string too
                    values.append(None if getisnull(ptr, row, column) else "")
            yield values

    def error_field(self, code: int) -> bytes | None:
        value: bytes | None = self._lib.PQresultErrorField(self._ptr, code)
        return value

    def error(self) -> Error:
        """The server's error, as libpq words it without its severity (``relation "x" does not
        exist`` with its ``LINE`` and ``HINT`` lines), and its SQLSTATE."""
        message = _text(self._lib.PQresultErrorMessage(self._ptr))
        severity = self.error_field(DIAG_SEVERITY)
        if severity and message.startswith(_text(severity) + ":"):
            message = message[len(_text(severity)) + 1 :]
        sqlstate = self.error_field(DIAG_SQLSTATE)
        return Error(
            message.strip() or "no error details available", None if sqlstate is None else _text(sqlstate)
        )

    def clear(self) -> None:
        """Free the result (its owner must: a result is libpq's memory, not the collector's)."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._lib.PQclear(ptr)


def _refuse_nul(text: bytes, what: str) -> None:
    """libpq reads C strings: text past a NUL byte would be dropped without a word (and
    PostgreSQL's text cannot hold one)."""
    if b"\0" in text:
        raise Error(f"{what} cannot contain a NUL byte (\\0)")


class Connection:
    """One libpq connection (non-blocking once made); :meth:`finish` closes it."""

    __slots__ = ("_lib", "_ptr", "_socket", "_sound")

    def __init__(self, lib: _Library, ptr: int) -> None:
        self._lib = lib
        self._ptr: int | None = ptr
        self._socket = -1
        self._sound = False  # nothing went wrong since libpq last said the connection is good

    @property
    def usable(self) -> bool:
        """Open, and not lost: neither finished nor reported broken by libpq.

        libpq finds a connection lost only in a call that then fails or returns an error
        result; until one does, the connection is known to be good without asking again.
        """
        if self._ptr is None:
            return False
        if not self._sound:
            self._sound = self._lib.PQstatus(self._ptr) == CONNECTION_OK
        return self._sound

    @property
    def finished(self) -> bool:
        return self._ptr is None

    @property
    def socket(self) -> int:
        """The connection's socket (the same for its whole life once it is made)."""
        if self._socket < 0:
            self._socket = int(self._lib.PQsocket(self._ptr))
        return self._socket

    @property
    def transaction_status(self) -> int:
        if self._ptr is None:
            return TRANS_UNKNOWN
        return int(self._lib.PQtransactionStatus(self._ptr))

    @property
    def backend_pid(self) -> int:
        return int(self._lib.PQbackendPID(self._ptr))

    def parameter_status(self, name: bytes) -> bytes | None:
        """A setting the server reports (``in_hot_standby``, ``server_version``), as last reported."""
        value: bytes | None = self._lib.PQparameterStatus(self._ptr, name)
        return value

    def error_message(self) -> str:
        if self._ptr is None:
            return "the connection is closed"
        return _text(self._lib.PQerrorMessage(self._ptr)).strip() or "no error details available"

    def _checked(self, succeeded: int) -> None:
        if not succeeded:
            self._sound = False
            raise Error(self.error_message())

    def send_query(self, query: bytes) -> None:
        """Send a query by the simple protocol (one or several statements, no parameters)."""
        _refuse_nul(query, "a query")
        self._checked(self._lib.PQsendQuery(self._ptr, query))

    def send_query_params(self, query: bytes, params: list[bytes]) -> None:
        """Send one statement by the extended protocol, its ``$n`` parameters as text of unknown type."""
        _refuse_nul(query, "a query")
        for param in params:
            _refuse_nul(param, "an argument")
        values = (_S * len(params))(*params)
        self._checked(self._lib.PQsendQueryParams(self._ptr, query, len(params), None, values, None, None, 0))

    def flush(self) -> bool:
        """Send what is queued; True while some of it could not be sent yet."""
        sent = self._lib.PQflush(self._ptr)
        if sent < 0:
            self._sound = False
            raise Error(self.error_message())
        return bool(sent)

    def consume_input(self) -> None:
        self._checked(self._lib.PQconsumeInput(self._ptr))

    def is_busy(self) -> bool:
        return bool(self._lib.PQisBusy(self._ptr))

    def get_result(self) -> Result | None:
        ptr = self._lib.PQgetResult(self._ptr)
        if ptr is None:
            return None
        result = Result(self._lib, ptr)
        if result.status in _UNSOUND_STATES:
            self._sound = False
        return result

    def take_results(self, results: list[Result]) -> bool:
        """Take in what the server has sent and add each whole result to ``results``; True once
        the query has ended (or a COPY began, which waits for the client), False while libpq
        waits for more input. One call where a query's end needs half a dozen of libpq's."""
        lib, ptr = self._lib, self._ptr
        if not lib.PQconsumeInput(ptr):
            # Lost: what the server said before it went (a FATAL error saying why, with its
            # SQLSTATE) is still to be parsed, and then libpq's own word on the loss.
            self._sound = False
            if lib.PQisBusy(ptr):
                raise Error(self.error_message())
        while not lib.PQisBusy(ptr):
            result = lib.PQgetResult(ptr)
            if result is None:
                return True
            taken = Result(lib, result)
            results.append(taken)
            if taken.status in _UNSOUND_STATES:
                self._sound = False  # an error result, maybe the connection's: ask libpq next time
            elif taken.status in COPY_STATES:
                return True
        return False

    def finish(self) -> None:
        """Close the connection (its socket too: stop watching it first)."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._lib.PQfinish(ptr)

    def __del__(self) -> None:
        self.finish()

    async def cancel(self, give_up_after: float) -> None:
        """Ask the server to cancel what this connection runs; raises :class:`Error` if it cannot
        be asked within ``give_up_after`` seconds (the server may still not cancel: its answer says)."""
        if self._ptr is None:
            return
        lib = self._lib
        if not lib.nonblocking_cancel:
            await asyncio.wait_for(
                asyncio.to_thread(self._cancel_blocking, lib.PQgetCancel(self._ptr)), give_up_after
            )
            return
        request = lib.PQcancelCreate(self._ptr)
        if not request:
            raise MemoryError("libpq could not make a cancel request")
        try:
            if not lib.PQcancelStart(request):
                raise Error(_text(lib.PQcancelErrorMessage(request)).strip())
            async with asyncio.timeout(give_up_after):
                while (state := lib.PQcancelPoll(request)) != POLLING_OK:
                    if state == POLLING_FAILED:
                        raise Error(_text(lib.PQcancelErrorMessage(request)).strip())
                    await wait_socket(lib.PQcancelSocket(request), writing=state == POLLING_WRITING)
        except TimeoutError:
            raise Error("the cancel request timed out") from None
        finally:
            lib.PQcancelFinish(request)

    def _cancel_blocking(self, handle: int) -> None:
        lib = self._lib
        try:
            buffer = ctypes.create_string_buffer(256)
            if not lib.PQcancel(handle, buffer, len(buffer)):
                raise Error(_text(buffer.value).strip())
        finally:
            lib.PQfreeCancel(handle)


async def wait_socket(fileno: int, *, writing: bool) -> None:
    """Wait on the running loop until ``fileno`` is readable (or writable)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    if writing:
        loop.add_writer(fileno, ready)
    else:
        loop.add_reader(fileno, ready)
    try:
        await future
    finally:
        if writing:
            loop.remove_writer(fileno)
        else:
            loop.remove_reader(fileno)


def connect_timeout(params: Mapping[str, str]) -> float | None:
    """Seconds a connection attempt on one host may take, as libpq reads ``connect_timeout``
    (unset or 0: no limit; under 2: 2)."""
    given = params.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT") or "0"
    try:
        seconds = int(given)
    except ValueError:
        raise Error(f"invalid connect_timeout value: {given!r}") from None
    return None if seconds <= 0 else float(max(seconds, 2))


def _is_address(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


async def resolved(params: Mapping[str, str]) -> dict[str, str]:
    """The parameters with every host name's addresses as ``hostaddr``, looked up on the loop's
    resolver (a name with several addresses becomes as many hosts, tried in turn)."""
    result = dict(params)
    hosts_text = params.get("host", os.environ.get("PGHOST", ""))
    if not hosts_text or "hostaddr" in params or "PGHOSTADDR" in os.environ:
        return result
    hosts = hosts_text.split(",")
    ports = params.get("port", os.environ.get("PGPORT", "")).split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    if len(ports) != len(hosts):
        return result  # libpq refuses this, in its own words
    if all(not host or host.startswith("/") or _is_address(host) for host in hosts):
        return result
    loop = asyncio.get_running_loop()
    names, addresses, numbers, failures = [], [], [], []
    for host, port in zip(hosts, ports, strict=True):
        if not host or host.startswith("/") or _is_address(host):
            names.append(host)
            addresses.append("")
            numbers.append(port)
            continue
        try:
            found = await loop.getaddrinfo(host, int(port or DEFAULT_PORT), type=socket.SOCK_STREAM)
        except (OSError, ValueError) as error:
            failures.append(f'could not translate host name "{host}" to address: {error}')
            continue
        for address in dict.fromkeys(str(info[4][0]) for info in found):
            names.append(host)
            addresses.append(address)
            numbers.append(port)
    if not names:
        raise Error("; ".join(failures))
    result.update(host=",".join(names), hostaddr=",".join(addresses), port=",".join(numbers))
    return result


async def connect(params: Mapping[str, str]) -> Connection:
    """Open a connection with these keywords (libpq's own, as given: no connection string is
    parsed from a value); raises :class:`Error` with libpq's words when it cannot."""
    lib = library()
    timeout = connect_timeout(params)
    params = await resolved(params)
    keys = [key.encode() for key in params]
    values = [str(value).encode() for value in params.values()]
    ptr = lib.PQconnectStartParams(
        (_S * (len(keys) + 1))(*keys, None), (_S * (len(values) + 1))(*values, None), 0
    )
    if not ptr:
        raise MemoryError("libpq could not start a connection")
    connection = Connection(lib, ptr)
    hosts = max(1, len(params.get("host", "").split(",")))
    try:
        if lib.PQstatus(ptr) == CONNECTION_BAD:
            raise Error(connection.error_message())
        state = POLLING_WRITING  # libpq's protocol: wait to write before the first poll
        async with asyncio.timeout(None if timeout is None else timeout * hosts):
            while state != POLLING_OK:
                await wait_socket(lib.PQsocket(ptr), writing=state == POLLING_WRITING)
                state = lib.PQconnectPoll(ptr)
                if state == POLLING_FAILED:
                    raise Error(connection.error_message())
        if lib.PQsetnonblocking(ptr, 1) != 0:
            raise Error(connection.error_message())
        lib.PQsetNoticeProcessor(ptr, _discard_notice, None)
        connection._sound = True
    except TimeoutError:
        connection.finish()
        raise Error("connection timeout expired") from None
    except BaseException:
        connection.finish()
        raise
    return connection
