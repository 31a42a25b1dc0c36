"""Shell commands: run a body or a script with bash, in its own process group.

A command runs as ``bash -c BODY`` (inline) or ``bash FILE`` (``file:``) in the
workdir, with the runner's environment plus ``PGQ_INSTANCE_<ARG>`` for each
matrix argument, stdin from ``/dev/null`` (jobs are unattended) and no other
descriptor of the runner's. It is started by asyncio's subprocess machinery
(``loop.subprocess_exec``: ``subprocess.Popen`` underneath, which also puts the
signals Python ignores back at their defaults), and its output is fed to the
bounded captures as the pipes deliver it.

Each command gets its own session, whose process group is the unit of cleanup:
when a command is cancelled (timeout, SIGTERM, a lost lock) the whole group gets
SIGTERM, then SIGKILL after a grace period, and the cancellation returns only
when the group is gone. Background processes a command leaves behind are
stopped the same way when it exits, so nothing outlives its command.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from pgquartz.runner.executors.capture import DEFAULT_LIMITS, BoundedCapture, Limits
from pgquartz.runner.model.results import CommandResult, CommandState

BASH = "bash"
_INLINE_ARG_LIMIT = 100 * 1024  # Linux refuses one argv string over 128 KiB


class ShellExecutor:
    """Runs shell commands. One instance serves a whole run; it holds nothing between commands."""

    def __init__(
        self,
        *,
        workdir: pathlib.Path,
        limits: Limits = DEFAULT_LIMITS,
        kill_grace: float = 5.0,
        bash: str = BASH,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self._workdir = str(workdir)
        self._limits = limits
        self._kill_grace = kill_grace
        # Resolved once: given a bare name, every start would try each PATH entry in turn.
        self._bash = which(bash) or bash
        # Encoded once: subprocess would otherwise encode the whole environment per command.
        self._base_env = {
            os.fsencode(key): os.fsencode(value)
            for key, value in (os.environ if base_env is None else base_env).items()
        }

    async def run(
        self,
        *,
        name: str,
        inline: str | None = None,
        file: pathlib.Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run one command to its end; on cancellation, stop its process group, then re-raise."""
        started = datetime.datetime.now(datetime.UTC)
        clock = time.monotonic()
        environment = self._base_env
        if env:
            environment = {**environment}
            environment.update((os.fsencode(key), os.fsencode(value)) for key, value in env.items())
        script_file: pathlib.Path | None = None
        if file is not None:
            argv = [self._bash, str(file)]
        elif inline is not None and len(inline.encode()) > _INLINE_ARG_LIMIT:
            script_file = _write_script(inline)
            argv = [self._bash, str(script_file)]
        else:
            argv = [self._bash, "-c", inline or ""]
        output = _Output(BoundedCapture(self._limits), BoundedCapture(self._limits))
        try:
            try:
                transport = await _start(
                    argv, output, cwd=self._workdir, env=environment, grace=self._kill_grace
                )
            except OSError as error:
                return CommandResult(
                    name=name,
                    state=CommandState.FAILED,
                    rc=127,
                    stdout=output.stdout.result(),
                    stderr=output.stderr.result(),
                    started=started,
                    duration=time.monotonic() - clock,
                    error=f"cannot start {self._bash} in {self._workdir}: {error}",
                )
            try:
                rc = await self._wait(transport, output)
            finally:
                transport.close()
        finally:
            if script_file is not None:
                script_file.unlink(missing_ok=True)
        return CommandResult(
            name=name,
            state=CommandState.SUCCEEDED if rc == 0 else CommandState.FAILED,
            rc=rc,
            stdout=output.stdout.result(),
            stderr=output.stderr.result(),
            started=started,
            duration=time.monotonic() - clock,
            error=_signal_note(rc),
        )

    async def _wait(self, transport: asyncio.SubprocessTransport, output: _Output) -> int:
        pgid = transport.get_pid()
        try:
            await output.wait_exit()  # cancelled, the exit stays to be learned by the stopping
        except asyncio.CancelledError:
            await _stop_group(pgid, output, self._kill_grace)
            raise
        # bash is gone; anything it left running in its group must not outlive it
        # (and would otherwise hold our pipes open).
        if _group_alive(pgid):
            await _stop_group(pgid, output, self._kill_grace)
        # A process that left the group (setsid) may still hold the pipes: don't wait forever.
        if not output.drained.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output.drained), timeout=self._kill_grace)
        returncode = transport.get_returncode()
        if returncode is None:  # cannot be: the exit was learned
            return 255
        return 128 - returncode if returncode < 0 else returncode


class _Output(asyncio.SubprocessProtocol):
    """A command's pipes fed into its captures; ``exited`` and ``drained`` resolve when it exited and
    when both pipes reached their end."""

    def __init__(self, stdout: BoundedCapture, stderr: BoundedCapture) -> None:
        loop = asyncio.get_running_loop()
        self.stdout, self.stderr = stdout, stderr
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self._feeds = {1: stdout.feed, 2: stderr.feed}
        self._exit_waiters: list[asyncio.Future[None]] = []

    def wait_exit(self) -> asyncio.Future[None]:
        """:attr:`exited`, for one waiter: cancelling it (with the task awaiting it) leaves ``exited``
        to the others, and it resolves in the same turn of the loop (``asyncio.shield`` takes one more)."""
        if self.exited.done():
            return self.exited
        waiter: asyncio.Future[None] = self.exited.get_loop().create_future()
        self._exit_waiters.append(waiter)
        return waiter

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._feeds[fd](data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._feeds.pop(fd, None)
        if not self._feeds and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        for waiter in self._exit_waiters:
            if not waiter.done():  # else cancelled with its task
                waiter.set_result(None)
        self._exit_waiters.clear()


def _pidfds_work() -> bool:
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False  # 3.12 and later use pidfds by themselves where they work
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # Linux before 5.3, or a seccomp policy without pidfd_open
        return False
    return True


_PIDFD_WATCHER = asyncio.PidfdChildWatcher() if _pidfds_work() else None


def _learn_exits_from_pidfds(loop: asyncio.AbstractEventLoop) -> None:
    """On Python 3.11, commands' exits are learned from pidfds on the running loop, as 3.12 and later
    learn them by themselves, instead of from a thread per command waiting in ``waitpid`` (that
    thread was a quarter of the runner's CPU per command). Elsewhere this does nothing."""
    if _PIDFD_WATCHER is None:
        return
    policy = asyncio.get_event_loop_policy()
    if policy.get_child_watcher() is not _PIDFD_WATCHER:
        policy.set_child_watcher(_PIDFD_WATCHER)
    if not _PIDFD_WATCHER.is_active():  # a new loop (asyncio.run makes one a run)
        _PIDFD_WATCHER.attach_loop(loop)


async def _start(
    argv: list[str], output: _Output, *, cwd: str, env: Mapping[bytes, bytes], grace: float
) -> asyncio.SubprocessTransport:
    """``argv`` started in a session of its own, its pipes read into ``output``. Cancelled while it
    starts, it stops what it started before it gives way: no process is left behind."""
    loop = asyncio.get_running_loop()
    _learn_exits_from_pidfds(loop)
    starting = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: output,
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    )
    try:
        transport, _ = await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            transport, _ = await starting
            try:
                await _stop_group(transport.get_pid(), output, grace)
            finally:
                transport.close()
        raise
    return transport


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, which only wait to be reaped, don't count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    # Only reached when a group outlived its leader or is being stopped; as PID 1 in a
    # container, orphaned zombies would otherwise look alive forever.
    proc = pathlib.Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


async def _stop_group(pgid: int, output: _Output, grace: float) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``grace``, wait until it is gone.

    Shielded from further cancellation: a second Ctrl-C must not leave processes behind.
    """

    async def stop() -> None:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Polling is the only way to learn that a process group is empty.
        while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):  # the group is what counts
            await asyncio.wait_for(output.wait_exit(), timeout=1.0)
        deadline = time.monotonic() + 1.0
        while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(stop())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_note(rc: int) -> str | None:
    if rc > 128:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(rc - 128).name}"
    return None


def _write_script(body: str) -> pathlib.Path:
    import tempfile

    handle, name = tempfile.mkstemp(prefix="pgquartz-", suffix=".sh")
    with os.fdopen(handle, "w", encoding="utf-8") as script:
        script.write(body)
    return pathlib.Path(name)


def which(name: str) -> str | None:
    """The executable ``name`` would run as, found as ``shutil.which`` finds it on POSIX (whose
    module costs 4-6 ms of every start: it imports the bz2, lzma and zlib modules)."""
    if os.path.dirname(name):
        return name if _is_executable(name) else None
    path = os.environ.get("PATH")
    if path is None:
        try:
            path = os.confstr("CS_PATH") or ""
        except (AttributeError, ValueError):
            path = os.defpath
    for directory in dict.fromkeys(path.split(os.pathsep)) if path else ():
        candidate = os.path.join(directory, name)
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: str) -> bool:
    return os.path.exists(path) and os.access(path, os.X_OK) and not os.path.isdir(path)
