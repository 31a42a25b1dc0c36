"""The shell executor runs real bash and leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator

import psutil
import pytest

from pgquartz.runner.executors import shell as shell_module
from pgquartz.runner.executors.capture import Limits
from pgquartz.runner.executors.shell import ShellExecutor
from pgquartz.runner.model.results import CommandState
from tests.conftest import processes_with_marker


@pytest.fixture
async def shell(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ShellExecutor]:
    monkeypatch.chdir("/")  # the command must be put in its workdir, not inherit the runner's
    yield ShellExecutor(workdir=tmp_path, kill_grace=1.0)


async def test_inline_runs_in_workdir_with_instance_environment(
    shell: ShellExecutor, tmp_path: pathlib.Path
) -> None:
    result = await shell.run(
        name="t", inline='pwd; echo "arg=$PGQ_INSTANCE_ARG1"; echo err >&2', env={"PGQ_INSTANCE_ARG1": "7"}
    )
    assert result.state is CommandState.SUCCEEDED and result.rc == 0
    assert result.stdout.text == f"{tmp_path}\narg=7\n"
    assert result.stderr.text == "err\n"


async def test_callers_environment_is_passed_on(tmp_path: pathlib.Path) -> None:
    shell = ShellExecutor(workdir=tmp_path, base_env={**os.environ, "FROM_CALLER": "yes"})
    result = await shell.run(name="t", inline="echo $FROM_CALLER")
    assert result.stdout.text == "yes\n"


async def test_exit_code_is_the_commands(shell: ShellExecutor) -> None:
    result = await shell.run(name="t", inline="exit 42")
    assert result.state is CommandState.FAILED and result.rc == 42


async def test_file_scripts_run_with_bash(shell: ShellExecutor, tmp_path: pathlib.Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("echo from-file $0\n")
    result = await shell.run(name="t", file=script)
    assert result.stdout.text == f"from-file {script}\n"


async def test_large_inline_bodies_go_through_a_temporary_script(shell: ShellExecutor) -> None:
    body = "x=1\n" * 40_000 + "echo big-ok"
    result = await shell.run(name="t", inline=body)
    assert result.rc == 0 and result.stdout.text == "big-ok\n"


async def test_stdin_is_empty(shell: ShellExecutor) -> None:
    result = await shell.run(name="t", inline="cat; echo done")
    assert result.stdout.text == "done\n"


async def test_output_is_bounded(tmp_path: pathlib.Path) -> None:
    shell = ShellExecutor(workdir=tmp_path, limits=Limits(head=1000, tail=1000))
    result = await shell.run(name="t", inline="head -c 5000000 /dev/zero | tr '\\0' 'x'; echo; echo END")
    assert result.stdout.total_bytes == 5_000_005
    assert len(result.stdout.text) < 2100
    assert result.stdout.text.endswith("END\n")


async def test_killed_by_signal_reports_128_plus_signal(shell: ShellExecutor) -> None:
    result = await shell.run(name="t", inline="kill -TERM $$")
    assert result.rc == 143 and result.error == "killed by SIGTERM"


async def test_cancellation_kills_the_whole_process_group(shell: ShellExecutor) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    body = f"sleep 300 & sleep 301 & (exec -a {marker} sleep 302) & exec -a {marker}-main sleep 303"
    task = asyncio.ensure_future(shell.run(name="t", inline=body))
    await asyncio.sleep(0.5)
    assert processes_with_marker(marker), "the command should be running"
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2
    assert processes_with_marker(marker) == []


async def test_processes_ignoring_sigterm_are_killed_after_the_grace(tmp_path: pathlib.Path) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    body = f"trap '' TERM; (trap '' TERM; exec -a {marker} sleep 300) & wait"
    shell = ShellExecutor(workdir=tmp_path, kill_grace=0.5)
    task = asyncio.ensure_future(shell.run(name="t", inline=body))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with_marker(marker) == []


async def test_background_processes_do_not_outlive_their_command(shell: ShellExecutor) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    started = time.monotonic()
    result = await shell.run(name="t", inline=f"(exec -a {marker} sleep 300) & echo started")
    assert result.rc == 0 and result.stdout.text == "started\n"
    assert time.monotonic() - started < 3
    assert processes_with_marker(marker) == []


async def test_missing_bash_is_a_failed_command_not_a_crash(tmp_path: pathlib.Path) -> None:
    shell = ShellExecutor(workdir=tmp_path, bash="/nonexistent/bash")
    result = await shell.run(name="t", inline="true")
    assert result.state is CommandState.FAILED and result.rc == 127
    assert result.error is not None and "cannot start /nonexistent/bash" in result.error


async def test_signals_python_ignores_are_back_at_their_defaults(shell: ShellExecutor) -> None:
    # Python ignores SIGPIPE; a command must not inherit that, or `yes | head` never ends cleanly.
    result = await shell.run(name="t", inline='yes | head -c 1 > /dev/null; echo "${PIPESTATUS[0]}"')
    assert result.stdout.text == "141\n" and result.stderr.text == ""


async def test_a_command_inherits_only_stdin_stdout_and_stderr(
    shell: ShellExecutor, tmp_path: pathlib.Path
) -> None:
    inheritable = os.open(tmp_path / "held", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(inheritable, True)  # as a C library may leave one
    try:
        result = await shell.run(name="t", inline="ls /proc/$$/fd; true")
    finally:
        os.close(inheritable)
    assert result.stdout.text.split() == ["0", "1", "2"]


async def test_many_short_commands_leave_no_file_descriptor_or_zombie_behind(shell: ShellExecutor) -> None:
    await shell.run(name="first", inline="true")  # opens what a process keeps for all commands (/dev/null)
    before = set(os.listdir("/proc/self/fd"))
    results = await asyncio.gather(*(shell.run(name=f"t{i}", inline=f"echo {i}") for i in range(50)))
    assert [r.stdout.text for r in results] == [f"{i}\n" for i in range(50)]
    assert set(os.listdir("/proc/self/fd")) <= before
    zombies = [child for child in psutil.Process().children() if child.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []


async def test_a_missing_workdir_is_a_failed_command_and_leaks_nothing(tmp_path: pathlib.Path) -> None:
    await ShellExecutor(workdir=tmp_path).run(name="first", inline="true")  # what a process keeps
    before = set(os.listdir("/proc/self/fd"))
    result = await ShellExecutor(workdir=tmp_path / "gone").run(name="t", inline="true")
    assert result.state is CommandState.FAILED and result.rc == 127
    assert result.error is not None and f"cannot start bash in {tmp_path / 'gone'}" in result.error.replace(
        shell_module.which("bash") or "bash", "bash"
    )
    assert set(os.listdir("/proc/self/fd")) <= before


@pytest.mark.parametrize("delay", [0, 0.0005, 0.002, 0.01, 0.05])
async def test_a_command_cancelled_while_it_starts_leaves_no_process_behind(
    shell: ShellExecutor, delay: float
) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    before = set(os.listdir("/proc/self/fd"))
    task = asyncio.ensure_future(shell.run(name="t", inline=f"exec -a {marker} sleep 300"))
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with_marker(marker) == []
    assert set(os.listdir("/proc/self/fd")) <= before
    zombies = [child for child in psutil.Process().children() if child.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []


def test_bash_is_found_on_path_as_shutil_finds_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_executable = tmp_path / "bin" / "tool"
    not_executable.parent.mkdir()
    not_executable.write_text("#!/bin/sh\n")
    executable = tmp_path / "later" / "tool"
    executable.parent.mkdir()
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    (tmp_path / "dir" / "tool").mkdir(parents=True)  # a directory is never the executable
    path = os.pathsep.join(str(tmp_path / name) for name in ("dir", "bin", "later"))
    monkeypatch.setenv("PATH", path + os.pathsep + os.environ["PATH"])
    for name in ("tool", "bash", "no-such-tool", str(executable), str(not_executable), "/bin/sh"):
        assert shell_module.which(name) == shutil.which(name), name
    assert shell_module.which("tool") == str(executable)
