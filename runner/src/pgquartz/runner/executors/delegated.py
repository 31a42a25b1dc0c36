"""The runner's end of the spawn helper: commands started by another process, learned of on the event loop.

While commands run side by side, each ``os.posix_spawn`` in the runner holds
its event loop (and the GIL) until the new child has exec'd, and on two busy
cores that is most of the runner's time per command. :class:`Delegate` starts
pgquartz.runner.executors.spawnhelper, hands it each command's argv,
environment and pipe descriptors over a Unix socket, and turns its replies into
calls on the command's :class:`Watcher`: started with its pid (which is also
the command's process group: stopping it stays the runner's work), failed to
start, exited with its return code.

If the helper dies, every command it started is reported lost (its group can
still be stopped: its pid is known) and the runner starts the next ones itself.
Closing the delegate (or the runner ending in any way) closes the socket: the
helper stops what is still running and exits.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import marshal
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from pgquartz.runner.executors import spawnhelper

MAX_REQUEST = 64 * 1024
"""A larger request (a huge environment or inline body) is started by the runner itself: a
SOCK_SEQPACKET message must fit the socket's buffer whole."""

_HELPER = pathlib.Path(spawnhelper.__file__)
_CLOSE_WAIT = 10.0  # beyond the helper's own grace, for it to exit once closed


class SpawnerLost(OSError):
    """The helper died: what it started can no longer be followed to its exit."""


class Watcher(Protocol):
    def on_started(self, pid: int) -> None: ...
    def on_failed(self, error: OSError) -> None:
        """It did not start, or (once started) its exit cannot be learned."""

    def on_exited(self, returncode: int) -> None: ...


class Delegate:
    """One helper process, and the commands it started (one per shell executor)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: socket.socket, process: int, grace: float):
        self.lost = False
        self._ready: asyncio.Future[bool] = loop.create_future()
        self._loop = loop
        self._channel = channel
        self._process = process
        self._grace = grace
        self._next = 0
        self._requested: dict[int, Watcher] = {}
        self._running: dict[int, Watcher] = {}
        self._unsent: collections.deque[tuple[bytes, list[int], tuple[int, ...]]] = collections.deque()
        self._waiting_to_send = False
        """A writer callback is registered: the socket was full (rare; asking the loop to remove one
        that is not there costs a selector lookup per command)."""
        loop.add_reader(channel.fileno(), self._readable)

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop, *, grace: float) -> Delegate:
        """Start the helper; it takes requests once it is :attr:`usable` (until then the runner starts
        commands itself)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_HELPER), str(theirs.fileno()), repr(grace)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stderr stays: a crash says why there
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C is for the runner to handle
            )
        finally:
            theirs.close()
        process.returncode = 0  # reaped by close(), not by Popen: it must not warn that it still runs
        ours.setblocking(False)
        return cls(loop, ours, process.pid, grace)

    @property
    def usable(self) -> bool:
        """Whether the helper takes requests: it said it is ready, and it is still there."""
        return not self.lost and self._ready.done() and self._ready.result()

    async def wait_ready(self) -> bool:
        """Wait until the helper is ready (True) or will not be (False: it could not start, or died)."""
        return await asyncio.shield(self._ready)

    def request(
        self,
        watcher: Watcher,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[bytes, bytes],
        stdin: int,
        stdout: int,
        stderr: int,
    ) -> bool:
        """Have the helper start ``argv``; False when it cannot take it (then nothing was done).

        On True the delegate owns ``stdout`` and ``stderr`` (the write ends of the pipes) and closes
        them once they are sent; ``stdin`` stays the caller's."""
        if not self.usable:
            return False
        ident = self._next
        payload = marshal.dumps((ident, cwd, list(argv), dict(env)))
        if len(payload) > MAX_REQUEST:
            return False
        self._next += 1
        self._requested[ident] = watcher
        self._unsent.append((payload, [stdin, stdout, stderr], (stdout, stderr)))
        if len(self._unsent) == 1:
            self._flush()
        return True

    def _flush(self) -> None:
        while self._unsent:
            payload, descriptors, owned = self._unsent[0]
            try:
                self._channel.sendmsg(
                    [payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", descriptors))]
                )
            except BlockingIOError:
                if not self._waiting_to_send:
                    self._loop.add_writer(self._channel.fileno(), self._flush)
                    self._waiting_to_send = True
                return
            except OSError as error:
                self._lose(SpawnerLost(error.errno, f"the spawn helper stopped taking commands: {error}"))
                return
            self._unsent.popleft()
            for fd in owned:
                os.close(fd)
        if self._waiting_to_send:
            self._loop.remove_writer(self._channel.fileno())
            self._waiting_to_send = False

    def _readable(self) -> None:
        while True:
            try:
                data = self._channel.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lose(SpawnerLost(0, "the spawn helper died: the command's exit status is unknown"))
                return
            self._dispatch(marshal.loads(data))

    def _dispatch(self, message: tuple[object, ...]) -> None:
        kind = message[0]
        if kind == "exited":
            _, pid, returncode = message
            assert isinstance(pid, int) and isinstance(returncode, int)
            watcher = self._running.pop(pid, None)
            if watcher is not None:
                watcher.on_exited(returncode)
        elif kind == "started":
            _, ident, pid = message
            assert isinstance(ident, int) and isinstance(pid, int)
            watcher = self._requested.pop(ident)
            self._running[pid] = watcher
            watcher.on_started(pid)
        elif kind == "failed":
            _, ident, errno, text, filename = message
            assert isinstance(ident, int) and isinstance(errno, int) and isinstance(text, str)
            error = OSError(errno, text, filename) if filename else OSError(errno, text)
            self._requested.pop(ident).on_failed(error)
        elif kind == "ready":
            self._ready.set_result(True)
        elif kind == "unable":  # it cannot start commands as the runner does: the runner goes on alone
            self._lose(SpawnerLost(0, str(message[1])))

    def _lose(self, error: SpawnerLost) -> None:
        if self.lost:
            return
        self.lost = True
        self._detach()
        if not self._ready.done():
            self._ready.set_result(False)
        for _, _, owned in self._unsent:
            for fd in owned:
                os.close(fd)
        self._unsent.clear()
        requested, running = self._requested, self._running
        self._requested, self._running = {}, {}
        for watcher in requested.values():
            watcher.on_failed(SpawnerLost(error.errno, "the spawn helper died before it started the command"))
        for watcher in running.values():
            watcher.on_failed(error)

    def _detach(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._channel.fileno())
            self._loop.remove_writer(self._channel.fileno())
        self._channel.close()

    async def close(self) -> None:
        """Close the socket and wait until the helper has exited (it first stops what it still runs)."""
        if not self.lost:
            self.lost = True
            self._detach()
            if not self._ready.done():
                self._ready.set_result(False)
        deadline = time.monotonic() + self._grace + _CLOSE_WAIT
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(self._process, os.WNOHANG)  # noqa: ASYNC222 (never blocks)
            except ChildProcessError:
                return
            if pid:
                return
            await asyncio.sleep(0.005)
