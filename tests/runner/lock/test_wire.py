"""HTTP/1.1 as the etcd client reads it: framing, streams split anywhere, keep-alive, bad replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pgquartz.runner.lock.wire import Connection, ProtocolError


async def member(replies: list[bytes]) -> tuple[asyncio.Server, int, list[bytes]]:
    """A server that answers each request on a connection with the next canned reply."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length:"))[15:]
            )
            requests.append(head + await reader.readexactly(length))
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], requests


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"


async def lines_of(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [line async for line in stream]


async def test_stream_messages_split_across_chunks_come_out_whole() -> None:
    reply = chunked(b'{"result":{"crea', b'ted":true}}\n{"result":{"events":[', b']}}\n{"a":1}\n')
    server, port, requests = await member([reply])
    async with server:
        connection = await Connection.open("127.0.0.1", port, tls=None)
        status, messages = await connection.stream("/v3/watch", b'{"x":1}', {"Authorization": "t"})
        assert status == 200
        assert await lines_of(messages) == [
            b'{"result":{"created":true}}',
            b'{"result":{"events":[]}}',
            b'{"a":1}',
        ]
        connection.close()
    [request] = requests
    assert request.startswith(b"POST /v3/watch HTTP/1.1\r\n") and b"\r\nAuthorization: t\r\n" in request
    assert request.endswith(b'\r\n\r\n{"x":1}')


async def test_a_kept_alive_connection_carries_one_call_after_another() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    server, port, requests = await member(
        [ok, chunked(b'{"n"', b":2}"), ok.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n")]
    )
    async with server:
        connection = await Connection.open("127.0.0.1", port, tls=None)
        assert await connection.call("/a", b"{}", {}) == (200, b"{}")
        assert await connection.call("/b", b"{}", {}) == (200, b'{"n":2}')
        assert connection.reusable
        assert await connection.call("/c", b"{}", {}) == (200, b"{}")
        assert not connection.reusable  # the member said it closes
    assert len(requests) == 3


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",  # closed mid-body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ],
)
async def test_a_reply_that_is_not_http_as_expected_is_a_protocol_error_and_closes(reply: bytes) -> None:
    server, port, _ = await member([reply])
    async with server:
        connection = await Connection.open("127.0.0.1", port, tls=None)
        with pytest.raises(ProtocolError):
            await connection.call("/v3/kv/range", b"{}", {})
        assert not connection.reusable
