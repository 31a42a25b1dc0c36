"""How a command's process is started: posix_spawn where it can be, Popen where it must be."""

from __future__ import annotations

import asyncio
import os
import pathlib

import pytest

from pgquartz.runner.executors import spawn
from pgquartz.runner.executors.shell import ShellExecutor
from pgquartz.runner.model.results import CommandState


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    calls: list[object] = []
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


async def test_commands_in_the_runners_directory_are_posix_spawned(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.chdir(tmp_path)
    spawned = count_calls(monkeypatch, os, "posix_spawn")
    popened = count_calls(monkeypatch, spawn.subprocess, "Popen")
    result = await ShellExecutor(workdir=tmp_path).run(name="t", inline="pwd")
    assert result.stdout.text == f"{tmp_path}\n"
    assert len(spawned) == 1 and popened == []


async def test_commands_elsewhere_are_started_by_popen_in_their_workdir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.chdir("/")
    spawned = count_calls(monkeypatch, os, "posix_spawn")
    popened = count_calls(monkeypatch, spawn.subprocess, "Popen")
    result = await ShellExecutor(workdir=tmp_path).run(name="t", inline="pwd")
    assert result.stdout.text == f"{tmp_path}\n"
    assert spawned == [] and len(popened) == 1


async def test_a_missing_workdir_is_a_failed_command_and_leaks_nothing(tmp_path: pathlib.Path) -> None:
    await ShellExecutor(workdir=tmp_path).run(name="first", inline="true")  # what a process keeps
    before = set(os.listdir("/proc/self/fd"))
    result = await ShellExecutor(workdir=tmp_path / "gone").run(name="t", inline="true")
    assert result.state is CommandState.FAILED and result.rc == 127
    assert result.error is not None and "cannot start" in result.error
    assert set(os.listdir("/proc/self/fd")) <= before


async def test_a_cancelled_wait_for_the_exit_leaves_the_exit_to_others(tmp_path: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    child = spawn.Spawned(loop)
    cancelled, kept = child.wait_exit(), child.wait_exit()
    waiting = asyncio.ensure_future(asyncio.wait_for(cancelled, timeout=0.01))
    with pytest.raises(TimeoutError):
        await waiting
    assert cancelled.cancelled() and not child.exited.done()
    child.on_exited(3)  # the waiters still waiting learn it in the same turn as `exited`
    assert child.exited.result() == 3 and kept.done() and kept.result() == 3
    assert child.wait_exit() is child.exited  # once known, no waiter of its own


async def test_an_exit_that_cannot_be_learned_reaches_every_waiter(tmp_path: pathlib.Path) -> None:
    child = spawn.Spawned(asyncio.get_running_loop())
    child.on_started(12345)
    waiter = child.wait_exit()
    child.on_failed(OSError("the helper is gone"))
    with pytest.raises(OSError, match="the helper is gone"):
        await waiter
    assert isinstance(child.exited.exception(), OSError)


async def test_a_wait_for_the_start_is_cancelled_alone_and_a_failed_start_reaches_the_others() -> None:
    child = spawn.Spawned(asyncio.get_running_loop())
    cancelled, kept = child.wait_started(), child.wait_started()
    cancelled.cancel()
    child.on_failed(OSError("no such interpreter"))
    assert not child.started.cancelled()
    with pytest.raises(OSError, match="no such interpreter"):
        await kept
    started = spawn.Spawned(asyncio.get_running_loop())
    waiter = started.wait_started()
    started.on_started(4321)
    assert waiter.done() and started.pid == 4321 and started.wait_started() is started.started
