"""Commands' descriptors are watched through one epoll: each ready one is called once, a stale event never."""

from __future__ import annotations

import asyncio
import gc
import os
import select
import weakref

import pytest

from pgquartz.runner.executors import readiness


async def until_called(calls: list[int], count: int) -> None:
    async with asyncio.timeout(5):
        while len(calls) < count:  # noqa: ASYNC110 (what the loop's callbacks did, polled)
            await asyncio.sleep(0.01)


async def test_a_readable_descriptor_is_called_until_it_is_unwatched() -> None:
    watched = readiness.for_loop(asyncio.get_running_loop())
    read, write = os.pipe()
    calls: list[int] = []

    def readable(fd: int) -> None:
        calls.append(fd)
        os.read(fd, 100)
        if len(calls) == 2:
            watched.unwatch(fd)

    watched.watch(read, readable)
    os.write(write, b"one")
    await until_called(calls, 1)
    os.write(write, b"two")
    await until_called(calls, 2)
    os.write(write, b"three")
    await asyncio.sleep(0.1)
    assert calls == [read, read]
    os.close(read)
    os.close(write)


async def test_an_event_for_a_descriptor_unwatched_in_the_same_turn_is_dropped() -> None:
    # Two pipes ready at once; the first one's callback closes the second, and a new, empty pipe
    # gets its number. The event already fetched for the old pipe must not reach the new one (whose
    # blocking read would hold the loop).
    watched = readiness.for_loop(asyncio.get_running_loop())
    first_read, first_write = os.pipe()
    second_read, second_write = os.pipe()
    replacement: list[tuple[int, int]] = []
    called: list[str] = []

    def first(fd: int) -> None:
        called.append("first")
        os.read(fd, 100)
        watched.unwatch(second_read)
        os.close(second_read)
        new_read, new_write = os.pipe()
        replacement.append((new_read, new_write))
        watched.watch(new_read, lambda fd: called.append("new"))

    def second(fd: int) -> None:
        called.append("second")
        os.read(fd, 100)
        watched.unwatch(first_read)  # whichever comes first closes the other
        os.close(first_read)
        new_read, new_write = os.pipe()
        replacement.append((new_read, new_write))
        watched.watch(new_read, lambda fd: called.append("new"))

    watched.watch(first_read, first)
    watched.watch(second_read, second)
    os.write(first_write, b"x")
    os.write(second_write, b"x")
    await asyncio.sleep(0.2)
    assert len(called) == 1 and called[0] in ("first", "second")
    [(new_read, new_write)] = replacement
    assert new_read in (first_read, second_read), "the test needs the number to be reused"
    os.write(new_write, b"now")  # once really readable, it is called
    await asyncio.sleep(0.2)
    assert called[1:] == ["new"] * (len(called) - 1) and len(called) >= 2
    watched.unwatch(new_read)
    watched.unwatch(first_read if called[0] == "first" else second_read)
    for fd in (
        new_read,
        new_write,
        first_write,
        second_write,
        first_read if called[0] == "first" else second_read,
    ):
        os.close(fd)


async def test_without_epoll_the_loops_own_readers_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(select, "epoll")
    loop = asyncio.get_running_loop()
    watched = readiness.Readiness(loop)
    read, write = os.pipe()
    calls: list[int] = []
    watched.watch(read, lambda fd: (calls.append(fd), os.read(fd, 10)))
    os.write(write, b"x")
    await until_called(calls, 1)
    watched.unwatch(read)
    assert loop.remove_reader(read) is False  # already removed
    os.close(read)
    os.close(write)


def test_the_epoll_goes_with_its_loop() -> None:
    async def watch_something() -> weakref.ref[readiness.Readiness]:
        return weakref.ref(readiness.for_loop(asyncio.get_running_loop()))

    before = len(os.listdir("/proc/self/fd"))
    gone = asyncio.run(watch_something())
    gc.collect()
    assert gone() is None
    assert len(os.listdir("/proc/self/fd")) <= before


def test_each_loop_has_its_own_readiness_and_asking_again_gives_the_same() -> None:
    async def twice() -> tuple[readiness.Readiness, readiness.Readiness]:
        loop = asyncio.get_running_loop()
        return readiness.for_loop(loop), readiness.for_loop(loop)

    first = asyncio.run(twice())
    second = asyncio.run(twice())
    assert first[0] is first[1] and second[0] is second[1]
    assert first[0] is not second[0]
