"""Shell commands: run a body or a script with bash, in its own process group.

A command runs as ``bash -c BODY`` (inline) or ``bash FILE`` (``file:``) in the
workdir, with the runner's environment plus ``PGQ_INSTANCE_<ARG>`` for each
matrix argument, and stdin from ``/dev/null`` (jobs are unattended).

Each command gets its own process group, which is the unit of cleanup: when a
command is cancelled (timeout, SIGTERM, a lost lock) the whole group gets
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
import shutil
import signal
import time
from collections.abc import Mapping

from pgquartz.runner.executors import spawn
from pgquartz.runner.executors.capture import DEFAULT_LIMITS, BoundedCapture, Limits
from pgquartz.runner.model.results import CommandResult, CommandState

BASH = "bash"
_INLINE_ARG_LIMIT = 100 * 1024  # Linux refuses one argv string over 128 KiB


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
    ) -> None:
        self._workdir = str(workdir)
        self._limits = limits
        self._kill_grace = kill_grace
        # Resolved once: given a bare name, every spawn would try each PATH entry in turn.
        self._bash = shutil.which(bash) or bash
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
        stdout, stderr = BoundedCapture(self._limits), BoundedCapture(self._limits)
        try:
            try:
                child = spawn.spawn(
                    argv, cwd=self._workdir, env=environment, stdout=stdout.feed, stderr=stderr.feed
                )
            except OSError as error:
                return CommandResult(
                    name=name,
                    state=CommandState.FAILED,
                    rc=127,
                    started=started,
                    duration=time.monotonic() - clock,
                    error=f"cannot start {self._bash}: {error}",
                )
            try:
                rc = await self._wait(child)
            finally:
                child.close()
        finally:
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
            returncode = await asyncio.shield(child.exited)
        except asyncio.CancelledError:
            await _stop_group(child, self._kill_grace)
            raise
        # bash is gone; anything it left running in its group must not outlive it
        # (and would otherwise hold our pipes open).
        if _group_alive(child.pid):
            await _stop_group(child, self._kill_grace)
        # A process that left the group (setsid) may still hold the pipes: don't wait forever.
        if not child.drained.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.drained), timeout=self._kill_grace)
        return 128 - returncode if returncode < 0 else returncode


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

    pgid = child.pid

    async def stop() -> None:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Polling is the only way to learn that a process group is empty.
        while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
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
