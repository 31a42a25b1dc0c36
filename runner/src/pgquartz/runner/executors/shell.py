"""Shell commands: run a body or a script with bash, in its own process group.

A command runs as ``bash -c BODY`` (inline) or ``bash FILE`` (``file:``) in the
workdir, with the runner's environment plus ``PGQ_INSTANCE_<ARG>`` for each
matrix argument, and stdin from ``/dev/null`` (jobs are unattended).

Each command gets its own process group, which is the unit of cleanup: when a
command is cancelled (timeout, SIGTERM, a lost lock) the whole group gets
SIGTERM, then SIGKILL after a grace period, and the cancellation returns only
when the group is gone. Background processes a command leaves behind are
stopped the same way when it exits, so nothing outlives its command.

While commands run side by side, they are started by a spawn helper process
(pgquartz.runner.executors.delegated) so that the runner's event loop is not
held while each one execs; stopping their groups stays the runner's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import os
import pathlib
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pgquartz.runner.executors import spawn
from pgquartz.runner.executors.capture import DEFAULT_LIMITS, BoundedCapture, Limits
from pgquartz.runner.model.results import CommandResult, CommandState

if TYPE_CHECKING:
    from pgquartz.runner.executors import delegated

BASH = "bash"
_INLINE_ARG_LIMIT = 100 * 1024  # Linux refuses one argv string over 128 KiB


class Delegation(enum.Enum):
    """Who starts the commands: the runner itself, or the spawn helper
    (pgquartz.runner.executors.delegated) once commands keep running side by side (after
    :data:`DELEGATE_AFTER` of them started while another ran), or always."""

    NEVER = "never"
    WHEN_CONCURRENT = "when-concurrent"
    ALWAYS = "always"


DEFAULT_DELEGATION = Delegation.WHEN_CONCURRENT
DELEGATE_AFTER = 16
"""Commands started while another runs before the helper is started: a few side by side are not
worth a process of its own (its start costs as much CPU as some 50 commands' spawns)."""


class ShellExecutor:
    """Runs shell commands. One instance serves a whole run."""

    def __init__(
        self,
        *,
        workdir: pathlib.Path,
        limits: Limits = DEFAULT_LIMITS,
        kill_grace: float = 5.0,
        bash: str = BASH,
        base_env: Mapping[str, str] | None = None,
        delegation: Delegation | None = None,
    ) -> None:
        self._workdir = str(workdir)
        self._limits = limits
        self._kill_grace = kill_grace
        # Resolved once: given a bare name, every spawn would try each PATH entry in turn.
        self._bash = which(bash) or bash
        # Encoded once: subprocess would otherwise encode the whole environment per command.
        self._base_env = {
            os.fsencode(key): os.fsencode(value)
            for key, value in (os.environ if base_env is None else base_env).items()
        }
        self._delegation = DEFAULT_DELEGATION if delegation is None else delegation
        self._running = 0
        self._side_by_side = 0  # commands started while another ran
        self._delegate: delegated.Delegate | None = None

    async def __aenter__(self) -> ShellExecutor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the spawn helper, if one was started (what it still runs is stopped first)."""
        if self._delegate is not None:
            delegate, self._delegate = self._delegate, None
            await delegate.close()

    async def _spawner(self) -> delegated.Delegate | None:
        """The spawn helper to start the next command with, if it is to be used and is ready."""
        if self._delegation is Delegation.NEVER:
            return None
        delegate = self._delegate
        if delegate is None:
            if self._delegation is Delegation.WHEN_CONCURRENT:
                if self._running < 2:
                    return None
                self._side_by_side += 1
                if self._side_by_side < DELEGATE_AFTER:
                    return None
            from pgquartz.runner.executors import delegated  # only for runs of concurrent commands

            try:
                delegate = self._delegate = delegated.Delegate.start(
                    asyncio.get_running_loop(), grace=self._kill_grace
                )
            except OSError:  # no interpreter to start it with: the runner starts commands itself
                self._delegation = Delegation.NEVER
                return None
        if self._delegation is Delegation.ALWAYS:
            await delegate.wait_ready()
        return delegate if delegate.usable else None

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
        stdout, stderr = BoundedCapture(self._limits), BoundedCapture(self._limits)
        self._running += 1
        try:
            try:
                delegate = await self._spawner()
                child = spawn.spawn(
                    argv,
                    cwd=self._workdir,
                    env=environment,
                    stdout=stdout.feed,
                    stderr=stderr.feed,
                    delegate=delegate,
                )
                try:
                    rc = await self._wait(child)
                finally:
                    child.close()
            except OSError as error:
                if isinstance(error, _Lost):
                    note = str(error)
                    rc = 255
                else:
                    note = f"cannot start {self._bash}: {error}"
                    rc = 127
                return CommandResult(
                    name=name,
                    state=CommandState.FAILED,
                    rc=rc,
                    stdout=stdout.result(),
                    stderr=stderr.result(),
                    started=started,
                    duration=time.monotonic() - clock,
                    error=note,
                )
        finally:
            self._running -= 1
            if script_file is not None:
                script_file.unlink(missing_ok=True)
        return CommandResult(
            name=name,
            state=CommandState.SUCCEEDED if rc == 0 else CommandState.FAILED,
            rc=rc,
            stdout=stdout.result(),
            stderr=stderr.result(),
            started=started,
            duration=time.monotonic() - clock,
            error=_signal_note(rc),
        )

    async def _wait(self, child: spawn.Spawned) -> int:
        try:
            await child.wait_started()  # raises OSError if it could not start
        except asyncio.CancelledError:
            await _stop_group(child, self._kill_grace)
            raise
        try:
            returncode = await child.wait_exit()
        except asyncio.CancelledError:
            await _stop_group(child, self._kill_grace)
            raise
        except OSError as lost:  # started, but its exit cannot be learned: its group still can be stopped
            await _stop_group(child, self._kill_grace)
            raise _Lost(str(lost)) from lost
        # bash is gone; anything it left running in its group must not outlive it
        # (and would otherwise hold our pipes open).
        if _group_alive(child.pid):
            await _stop_group(child, self._kill_grace)
        # A process that left the group (setsid) may still hold the pipes: don't wait forever.
        if not child.drained.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.drained), timeout=self._kill_grace)
        return 128 - returncode if returncode < 0 else returncode


class _Lost(OSError):
    """A command started, but its exit could not be learned."""


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


async def _stop_group(child: spawn.Spawned, grace: float) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``grace``, wait until it is gone.

    Shielded from further cancellation: a second Ctrl-C must not leave processes behind.
    """

    async def stop() -> None:
        try:
            await child.started
        except OSError:  # nothing was started
            return
        pgid = child.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Polling is the only way to learn that a process group is empty.
        while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError):  # lost track of its exit: the group is what counts
            await child.exited
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
