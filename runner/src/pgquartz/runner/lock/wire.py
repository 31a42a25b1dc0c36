"""HTTP/1.1 to one etcd member: the part of HTTP that etcd's JSON gateway needs.

etcd serves its whole v3 API as JSON over HTTP/1.1 on the client port (its
gRPC gateway, on by default): a unary call answers with one JSON object, a
streaming call (watch, lease keep-alive) with one JSON object per line of a
chunked body. gRPC itself costs a runner 30 MB of resident memory and a tenth
of a second of start-up for five calls and a watch, so the lock speaks this
small part of HTTP/1.1 over asyncio streams instead: one request at a time per
connection, keep-alive, ``Content-Length`` and chunked bodies, TLS. A connection
that fails or is cancelled mid-request is closed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Mapping

MAX_BODY = 64 * 1024 * 1024
"""Refuse a reply larger than this (the lock's replies are a few kB)."""

MAX_LINE = 1024 * 1024


class ProtocolError(ConnectionError):
    """The member's reply is not HTTP/1.1 as expected (or the connection broke mid-reply)."""


@dataclasses.dataclass(frozen=True)
class Head:
    status: int
    chunked: bool
    length: int | None
    keep_alive: bool


class Connection:
    """One TCP (or TLS) connection to one member, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str) -> None:
        self._reader = reader
        self._writer = writer
        self._authority = authority
        self.reusable = True
        self.from_pool = False
        """Taken from the idle connections: the member may have closed it meanwhile."""

    @classmethod
    async def open(
        cls, host: str, port: int, *, address: str | None = None, tls: ssl.SSLContext | None
    ) -> Connection:
        """Connect to ``address`` (default: ``host``); TLS verifies ``host``."""
        reader, writer = await asyncio.open_connection(
            address or host, port, ssl=tls, server_hostname=host if tls else None, limit=MAX_LINE
        )
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(reader, writer, authority)

    def close(self) -> None:
        self.reusable = False
        with contextlib.suppress(Exception):
            self._writer.close()

    async def call(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST ``body`` and read the whole reply: (status, body)."""
        try:
            head = await self._request(path, body, headers)
            data = b"".join([chunk async for chunk in self._body(head)])
        except BaseException:
            self.close()
            raise
        if not head.keep_alive:
            self.close()
        return head.status, data

    async def stream(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, AsyncIterator[bytes]]:
        """POST ``body``; (status, the reply's lines as they arrive). The connection is not reused."""
        self.reusable = False
        head = await self._request(path, body, headers)
        return head.status, self._lines(head)

    async def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> Head:
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self._authority}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        try:
            await self._writer.drain()
            return await self._head()
        except BaseException:
            self.close()
            raise

    async def _head(self) -> Head:
        status_line = await self._readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP reply: {status_line[:80]!r}")
        fields: dict[str, str] = {}
        while line := await self._readline():
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        length = None
        if not chunked and "content-length" in fields:
            if not fields["content-length"].isdigit():
                raise ProtocolError(f"a bad Content-Length: {fields['content-length'][:40]!r}")
            length = int(fields["content-length"])
        if length is not None and length > MAX_BODY:
            raise ProtocolError(f"a reply of {length} bytes is more than the lock ever reads")
        keep_alive = parts[0] == b"HTTP/1.1" and fields.get("connection", "").lower() != "close"
        return Head(status=int(parts[1]), chunked=chunked, length=length, keep_alive=keep_alive)

    async def _readline(self) -> bytes:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise ProtocolError("the etcd member closed the connection") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("a line of the etcd member's reply is too long") from None
        return line.rstrip(b"\r\n")

    async def _exactly(self, size: int) -> bytes:
        try:
            return await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ProtocolError("the etcd member closed the connection mid-reply") from None

    async def _body(self, head: Head) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; the connection stays usable only if read to its end."""
        complete = False
        try:
            if head.chunked:
                total = 0
                while size := await self._chunk_size():
                    total += size
                    if total > MAX_BODY:
                        raise ProtocolError("the etcd member's reply is larger than the lock ever reads")
                    yield await self._exactly(size)
                    await self._exactly(2)
                while await self._readline():  # trailers
                    pass
            elif head.length is not None:
                yield await self._exactly(head.length)
            else:  # no framing: the body runs to the end of the connection
                self.reusable = False
                yield await self._reader.read(MAX_BODY)
            complete = True
        finally:
            if not complete:
                self.close()

    async def _chunk_size(self) -> int:
        line = await self._readline()
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"a bad chunk size in the etcd member's reply: {line[:40]!r}") from None

    async def _lines(self, head: Head) -> AsyncIterator[bytes]:
        pending = b""
        async for piece in self._body(head):
            pending += piece
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line
            if len(pending) > MAX_LINE:
                raise ProtocolError("a message of the etcd member's stream is too long")
        if pending.strip():
            yield pending
