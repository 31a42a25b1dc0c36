"""One epoll for every command's pipes and pidfd, watched by the event loop as a single descriptor.

Each command has three descriptors to watch (two pipes and a pidfd). Through
``loop.add_reader`` each costs a handle, a selector key and a transport check
to add, and as much again to remove: about 20 µs a descriptor here, against
under 2 µs for ``epoll.register`` and ``unregister``, and each readiness is a
handle scheduled and run on its own. :class:`Readiness` keeps one epoll of its
own, registered on the loop once; when it is ready, one callback asks it which
descriptors are and calls theirs, all in one turn of the loop.

An event for a descriptor that a callback of the same turn stopped watching is
dropped: its number may already belong to a new pipe, which epoll will report
again if it is ready (level-triggered). Without epoll (not Linux) the loop's
own ``add_reader`` is used.
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Callable

Callback = Callable[[int], None]
"""Called with the descriptor that is ready to read (or at end of file, or closed by its peer)."""


class Readiness:
    """The descriptors watched for one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Not a reference: the loop holds this (through its reader), and must be free to go.
        self._loop = weakref.ref(loop)
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._callbacks: dict[int, Callback] = {}
        self._unwatched: set[int] | None = None  # while dispatching: what callbacks stopped watching
        if self._epoll is not None:
            loop.add_reader(self._epoll.fileno(), self._dispatch)
            weakref.finalize(self, self._epoll.close)

    def watch(self, fd: int, callback: Callback) -> None:
        self._callbacks[fd] = callback
        if self._epoll is None:
            self._running_loop().add_reader(fd, callback, fd)
        else:
            self._epoll.register(fd, select.EPOLLIN)

    def idle(self) -> bool:
        """Whether no descriptor is watched: nothing of the runner's is waiting for input."""
        return not self._callbacks

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed)."""
        if self._callbacks.pop(fd, None) is None:
            return
        if self._epoll is None:
            self._running_loop().remove_reader(fd)
            return
        # Not contextlib.suppress: made three times a command, it cost more than the call.
        try:  # noqa: SIM105
            self._epoll.unregister(fd)
        except OSError:  # closed already (a library's socket): epoll dropped it then
            pass
        if self._unwatched is not None:
            self._unwatched.add(fd)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        assert loop is not None, "a loop's descriptors are watched while it exists"
        return loop

    def _dispatch(self) -> None:
        assert self._epoll is not None
        ready = self._epoll.poll(0)
        unwatched: set[int] = set()
        self._unwatched = unwatched
        try:
            for fd, _ in ready:
                if fd in unwatched:
                    continue
                callback = self._callbacks.get(fd)
                if callback is not None:
                    callback(fd)
        finally:
            self._unwatched = None


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Readiness] = weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop) -> Readiness:
    """The loop's :class:`Readiness` (made on first use; it goes with the loop)."""
    readiness = _BY_LOOP.get(loop)
    if readiness is None:
        readiness = _BY_LOOP[loop] = Readiness(loop)
    return readiness
