"""The spawn helper: a small process that starts a run's commands so that the runner's event loop need not.

``os.posix_spawn`` is glibc's vfork + exec: the caller is held until the child
has exec'd, about half a millisecond on two busy cores, and holds the GIL for
it. When commands run side by side (a matrix at ``parallel: 8``) the runner's
loop spends that time blocked instead of reading the pipes and results of the
other commands. Handed to this helper, the block happens in another process on
another core while the runner goes on: pgquartz.runner.executors.delegated is the
runner's end.

The helper is started as ``python -I -S spawnhelper.py FD GRACE`` in a session
of its own (a terminal's Ctrl-C is the runner's to handle) and imports the
standard library only. It talks over FD, a ``SOCK_SEQPACKET`` Unix socket,
one marshalled tuple per message:

- runner → helper: ``(ident, cwd, argv, env)`` with the child's stdin, stdout
  and stderr attached as SCM_RIGHTS descriptors;
- helper → runner: ``("ready",)`` once (or ``("unable", why)``, and it exits),
  then ``("started", ident, pid)`` or ``("failed", ident, errno, message, filename)``
  for each request and ``("exited", pid, returncode)`` once each child is reaped.

Each child runs in a session of its own (its process group is the runner's unit
of cleanup), with SIGPIPE and SIGXFSZ at their defaults and nothing inherited
but 0, 1 and 2 (every descriptor the helper holds is close-on-exec). When the
socket reaches end of file, the runner is gone: the groups of children still
running get SIGTERM, SIGKILL after GRACE seconds, and the helper exits.
"""

from __future__ import annotations

import array
import contextlib
import marshal
import os
import select
import signal
import socket
import sys
import time

RECEIVE_SIZE = 1 << 20  # a request is at most delegated.MAX_REQUEST bytes
_RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))
_DESCRIPTORS = 3  # stdin, stdout, stderr


class Helper:
    def __init__(self, channel: socket.socket, grace: float) -> None:
        self.channel = channel
        self.grace = grace
        self.children: set[int] = set()
        self.cwd = os.getcwd()

    def serve(self) -> None:
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to be woken by the wakeup pipe
        poller = select.poll()
        poller.register(self.channel, select.POLLIN)
        poller.register(wakeup_read, select.POLLIN)
        unable = _cannot_spawn_in_session()
        if unable:
            self.send(("unable", unable))
            return
        self.send(("ready",))
        while True:
            for fd, _ in poller.poll():
                if fd == wakeup_read:
                    _drain(wakeup_read)
                    self.reap()
                elif not self.receive():
                    self.stop_children()
                    return

    def receive(self) -> bool:
        """Serve every request waiting on the socket; False at end of file."""
        while True:
            try:
                data, ancillary, _, _ = self.channel.recvmsg(
                    RECEIVE_SIZE,
                    socket.CMSG_SPACE(_DESCRIPTORS * array.array("i").itemsize),
                    socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC,
                )
            except BlockingIOError:
                return True
            except ConnectionResetError:
                return False
            if not data:
                return False
            descriptors = _descriptors(ancillary)
            try:
                self.start(marshal.loads(data), descriptors)
            finally:
                for fd in descriptors:
                    os.close(fd)

    def start(self, request: tuple[int, str, list[str], dict[bytes, bytes]], descriptors: list[int]) -> None:
        ident, cwd, argv, env = request
        try:
            if len(descriptors) != _DESCRIPTORS:
                raise OSError(0, f"expected {_DESCRIPTORS} descriptors, got {len(descriptors)}")
            if cwd != self.cwd:
                os.chdir(cwd)  # this process starts nothing else meanwhile
                self.cwd = cwd
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(descriptors)]
            start = os.posix_spawn if os.path.isabs(argv[0]) else os.posix_spawnp
            pid = start(argv[0], argv, env, file_actions=actions, setsid=True, setsigdef=_RESET_SIGNALS)
        except OSError as error:
            failure = error.strerror or str(error)
            self.send(("failed", ident, error.errno or 0, failure, str(error.filename or "")))
        else:
            self.children.add(pid)
            self.send(("started", ident, pid))

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send(("exited", pid, os.waitstatus_to_exitcode(status)))

    def send(self, message: tuple[str | int, ...]) -> None:
        with contextlib.suppress(OSError):  # the runner is gone: the next poll sees end of file
            self.channel.send(marshal.dumps(message))  # blocking: the runner reads as it can

    def stop_children(self) -> None:
        """The runner is gone: its commands' groups must not outlive it."""
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 1.0)):
            for pid in self.children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while self.children and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.01)


def _cannot_spawn_in_session() -> str | None:
    """Why this process cannot posix_spawn into a new session (a C library without
    POSIX_SPAWN_SETSID, before glibc 2.26), or None when it can."""
    try:
        os.posix_spawn("/nonexistent/pgquartz", ["pgquartz"], {}, setsid=True)
    except NotImplementedError as error:
        return f"the spawn helper cannot start commands in sessions of their own: {error}"
    except OSError:  # it tried: setsid is there
        return None
    return "the spawn helper could not check how it starts commands"


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    received = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
    return list(received)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[1]))
    channel.set_inheritable(False)  # a command holding it would hide the runner's end from us
    channel.setblocking(True)
    Helper(channel, float(argv[2])).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
