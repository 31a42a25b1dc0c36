"""Starting a command's process, reading its pipes and learning of its exit, with no transport per command.

asyncio's subprocess transports cost about half a millisecond of the runner's
CPU per command (a ``Popen``, a transport for each pipe, a task to connect them,
a child watcher), which on jobs of many short commands is a third of the time
bash itself needs. Here a command costs one spawn and three file descriptors on
the event loop:

- the process is started by ``os.posix_spawn`` (glibc's vfork + exec) when it
  runs in the runner's own directory (posix_spawn cannot change directory in
  Python before 3.13's file actions), else by ``subprocess.Popen`` with ``cwd``;
  either way in a new session (its process group is the unit of cleanup), with
  the signals Python ignores (SIGPIPE, SIGXFSZ) back at their defaults, stdin
  from ``/dev/null`` and nothing but 0, 1 and 2 inherited (the descriptors a C
  library left inheritable are closed in the child, as ``close_fds`` does, or
  marked close-on-exec: pgquartz.runner.executors.descriptors);
- stdout and stderr are pipes read into the caller's callbacks when the loop
  says they are readable (through one epoll for all commands:
  pgquartz.runner.executors.readiness);
- the exit is learned from a pidfd on the loop (Linux 5.3+), or, without
  pidfds, from a thread that waits in ``waitpid`` for this one child.

Given a delegate (pgquartz.runner.executors.delegated), the process is started
by the spawn helper instead, which also learns of its exit; the pipes are read
here all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pgquartz.runner.executors import descriptors, readiness

if TYPE_CHECKING:
    from pgquartz.runner.executors import delegated

READ_SIZE = 256 * 1024  # as asyncio's pipe transports read
# The signals Python sets to SIG_IGN at start: an exec keeps them ignored unless reset.
_RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


def _pidfds_work() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a seccomp policy without pidfd_open
        return False
    return True


USE_PIDFD = _pidfds_work()
USE_POSIX_SPAWN = hasattr(os, "posix_spawn")
INHERITANCE = descriptors.Inheritance()
"""What each command's child must close (one per process: a run is one process)."""

Feed = Callable[[bytes], None]
T = TypeVar("T")


class Spawned:
    """A process being started: ``started`` resolves once :attr:`pid` is known (it raises OSError
    when it could not be started), ``exited`` to its return code (``-N`` for signal N; OSError when
    its exit cannot be learned), ``drained`` when both pipes reached end of file (or were closed by
    :meth:`close`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = 0
        self.started: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._readiness = readiness.for_loop(loop)
        self._pipes: dict[int, Feed] = {}
        self._waiters: dict[asyncio.Future[Any], list[asyncio.Future[Any]]] = {}

    def wait_started(self) -> asyncio.Future[None]:
        """:attr:`started`, for one waiter (see :meth:`wait_exit`)."""
        return self._waiter(self.started)

    def wait_exit(self) -> asyncio.Future[int]:
        """:attr:`exited`, for one waiter: cancelling it (with the task awaiting it) leaves ``exited``
        as it is, and it resolves in the same turn of the loop as ``exited``, where
        ``asyncio.shield`` takes one turn more (one a command)."""
        return self._waiter(self.exited)

    def _waiter(self, source: asyncio.Future[T]) -> asyncio.Future[T]:
        if source.done():
            return source
        waiter: asyncio.Future[T] = self._loop.create_future()
        self._waiters.setdefault(source, []).append(waiter)
        return waiter

    def _tell_waiters(self, source: asyncio.Future[Any]) -> None:
        """``source`` has its outcome: give it to those still waiting for it."""
        error = source.exception()  # (also marks it retrieved: the waiters have it)
        for waiter in self._waiters.pop(source, ()):
            if waiter.done():  # cancelled with its task
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(source.result())

    # what a delegated.Delegate reports

    def on_started(self, pid: int) -> None:
        self.pid = pid
        self.started.set_result(None)
        self._tell_waiters(self.started)

    def on_failed(self, error: OSError) -> None:
        waiting = self.started if not self.started.done() else self.exited
        if not waiting.done():
            waiting.set_exception(error)
            self._tell_waiters(waiting)

    def on_exited(self, returncode: int) -> None:
        self._set_exited(returncode)

    def _read_pipe(self, fd: int, feed: Feed) -> None:
        self._pipes[fd] = feed
        self._readiness.watch(fd, self._readable)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)  # a blocking pipe, but readable: this returns at once
        except OSError:
            data = b""
        if data:
            self._pipes[fd](data)
        else:
            self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        if self._pipes.pop(fd, None) is None:
            return
        self._readiness.unwatch(fd)
        os.close(fd)
        if not self._pipes and not self.drained.done():
            self.drained.set_result(None)

    def _watch_exit(self) -> None:
        if USE_PIDFD:
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:
                pass
            else:
                self._readiness.watch(pidfd, self._pidfd_readable)
                return
        threading.Thread(target=self._wait_in_thread, name=f"pgquartz-wait-{self.pid}", daemon=True).start()

    def _pidfd_readable(self, pidfd: int) -> None:
        self._readiness.unwatch(pidfd)
        os.close(pidfd)
        self._set_exited(_reap(self.pid))  # at once: the pidfd says it exited

    def _wait_in_thread(self) -> None:
        returncode = _reap(self.pid)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._set_exited, returncode)

    def _set_exited(self, returncode: int) -> None:
        if not self.exited.done():
            self.exited.set_result(returncode)
            self._tell_waiters(self.exited)

    def close(self) -> None:
        """Stop reading the pipes (what is still unread is lost). The exit is still watched."""
        for fd in list(self._pipes):
            self._close_pipe(fd)


def spawn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[bytes, bytes],
    stdout: Feed,
    stderr: Feed,
    delegate: delegated.Delegate | None = None,
) -> Spawned:
    """Start ``argv`` in ``cwd`` in a new session, through ``delegate`` when it takes it; raises
    OSError when it cannot be started here (a delegate says so through ``started``)."""
    loop = asyncio.get_running_loop()
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    spawned = Spawned(loop)
    try:
        taken = delegate is not None and delegate.request(
            spawned, argv, cwd=cwd, env=env, stdin=_devnull(), stdout=out_write, stderr=err_write
        )
    except BaseException:
        for fd in (out_read, out_write, err_read, err_write):
            os.close(fd)
        raise
    if not taken:
        try:
            pid = _start(argv, cwd=cwd, env=env, stdin=_devnull(), stdout=out_write, stderr=err_write)
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        spawned.on_started(pid)
        spawned._watch_exit()
    spawned._read_pipe(out_read, stdout)
    spawned._read_pipe(err_read, stderr)
    return spawned


@functools.cache
def _devnull() -> int:
    """/dev/null for reading, opened once (close-on-exec: each child gets it as its stdin only)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _start(
    argv: Sequence[str], *, cwd: str, env: Mapping[bytes, bytes], stdin: int, stdout: int, stderr: int
) -> int:
    inherited = INHERITANCE.to_close() if USE_POSIX_SPAWN and _is_current_directory(cwd) else None
    if inherited is not None:
        # Python's own descriptors are never inheritable, but a C library's may be: close those
        # in the child, as Popen's close_fds does.
        actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_CLOSE, fd) for fd in inherited]
        actions += [
            (os.POSIX_SPAWN_DUP2, stdin, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
        ]
        start = os.posix_spawn if os.path.isabs(argv[0]) else os.posix_spawnp
        try:
            return start(
                argv[0], list(argv), env, file_actions=actions, setsid=True, setsigdef=_RESET_SIGNALS
            )
        except NotImplementedError:  # no POSIX_SPAWN_SETSID (glibc < 2.26): Popen below
            pass
    process = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True
    )
    # Reaped by Spawned, not by Popen: tell it so, or it warns that the process still runs.
    process.returncode = 0
    return process.pid


def _reap(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else: its status is lost
        return 255
    return os.waitstatus_to_exitcode(status)


def _is_current_directory(path: str) -> bool:
    try:
        return os.getcwd() == path
    except OSError:  # the runner's directory was removed
        return False
