"""The spawn helper starts commands that run side by side, and nothing outlives it or the runner.

Who started a command shows in its ``$PPID``: the runner's pid, or the helper's.
"""

from __future__ import annotations

import array
import asyncio
import marshal
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import psutil
import pytest

from pgquartz.runner.executors import delegated, spawnhelper
from pgquartz.runner.executors import shell as shell_module
from pgquartz.runner.executors.shell import Delegation, ShellExecutor
from pgquartz.runner.model.results import CommandState
from tests.conftest import processes_with_marker


def started_by(text: str) -> int:
    return int(text.split(maxsplit=1)[0])


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (the state of other processes, polled)
            await asyncio.sleep(0.02)


@pytest.fixture
async def shell(tmp_path: pathlib.Path) -> AsyncIterator[ShellExecutor]:
    async with ShellExecutor(workdir=tmp_path, kill_grace=1.0) as executor:
        yield executor


async def test_commands_side_by_side_move_to_the_helper_once_it_is_ready(shell: ShellExecutor) -> None:
    long = asyncio.ensure_future(shell.run(name="long", inline="sleep 1; echo $PPID"))
    await asyncio.sleep(0.1)
    parents: list[int] = []
    deadline = time.monotonic() + 10
    while not any(parent != os.getpid() for parent in parents):
        assert time.monotonic() < deadline, "no command reached the helper"
        results = await asyncio.gather(*(shell.run(name=f"t{i}", inline=f"echo $PPID {i}") for i in range(4)))
        assert [result.stdout.text.split()[1] for result in results] == ["0", "1", "2", "3"]
        parents += [started_by(result.stdout.text) for result in results]
    assert started_by((await long).stdout.text) == os.getpid()  # the first ran alone: the runner's
    helper = psutil.Process(next(parent for parent in parents if parent != os.getpid()))
    assert helper.ppid() == os.getpid() and "spawnhelper" in " ".join(helper.cmdline())
    await shell.aclose()
    assert not psutil.pid_exists(helper.pid)
    assert [child for child in psutil.Process().children() if child.pid == helper.pid] == []


async def test_commands_one_after_another_start_no_helper(shell: ShellExecutor) -> None:
    for i in range(5):
        result = await shell.run(name=f"t{i}", inline="echo $PPID")
        assert started_by(result.stdout.text) == os.getpid()
    assert [
        child for child in psutil.Process().children() if "spawnhelper" in " ".join(child.cmdline())
    ] == []


async def test_a_few_commands_side_by_side_start_no_helper(shell: ShellExecutor) -> None:
    few = shell_module.DELEGATE_AFTER - 1
    results = await asyncio.gather(
        *(shell.run(name=f"t{i}", inline="sleep 0.2; echo $PPID") for i in range(few))
    )
    assert {started_by(result.stdout.text) for result in results} == {os.getpid()}
    assert [
        child for child in psutil.Process().children() if "spawnhelper" in " ".join(child.cmdline())
    ] == []


async def test_an_environment_too_large_for_the_helper_is_started_by_the_runner(
    tmp_path: pathlib.Path,
) -> None:
    async with ShellExecutor(workdir=tmp_path, delegation=Delegation.ALWAYS) as shell:
        small = await shell.run(name="small", inline="echo $PPID")
        large = await shell.run(
            name="large", inline="echo $PPID ${#BIG}", env={"BIG": "x" * delegated.MAX_REQUEST}
        )
    assert started_by(small.stdout.text) != os.getpid()
    assert large.stdout.text.split() == [str(os.getpid()), str(delegated.MAX_REQUEST)]


async def test_commands_of_a_killed_helper_fail_and_their_groups_are_stopped(tmp_path: pathlib.Path) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    async with ShellExecutor(workdir=tmp_path, kill_grace=1.0, delegation=Delegation.ALWAYS) as shell:
        task = asyncio.ensure_future(
            shell.run(name="t", inline=f"(exec -a {marker}-bg sleep 300) & exec -a {marker} sleep 301")
        )
        await until(lambda: len(processes_with_marker(marker)) == 2)
        helper = next(p for p in processes_with_marker(marker) if p.cmdline()[0] == marker).ppid()
        assert "spawnhelper" in " ".join(psutil.Process(helper).cmdline())
        os.kill(helper, signal.SIGKILL)
        result = await asyncio.wait_for(task, 10)
        assert result.state is CommandState.FAILED and result.rc == 255
        assert result.error is not None and "spawn helper died" in result.error
        assert processes_with_marker(marker) == []
        after = await shell.run(name="after", inline="echo $PPID")  # the runner goes on alone
    assert after.state is CommandState.SUCCEEDED and started_by(after.stdout.text) == os.getpid()


def test_the_helper_stops_its_commands_when_the_runner_dies(tmp_path: pathlib.Path) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    job = tmp_path / "job.yml"
    # Enough instances side by side for the helper to be started (DELEGATE_AFTER), and it is
    # ready when their second commands start.
    instances = ", ".join(str(n) for n in range(24))
    job.write_text(
        f"git: {{disable: true}}\nparallel: 24\nsteps:\n  s:\n    matrix: {{n: [{instances}]}}\n"
        f"    commands:\n      - inline: 'sleep 1'\n      - inline: 'exec -a {marker} sleep 300'\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "pgquartz.runner", "-c", str(job)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while len(processes_with_marker(marker)) < 24:
            assert time.monotonic() < deadline and runner.poll() is None, "the commands did not start"
            time.sleep(0.05)
        parents = {psutil.Process(p.ppid()) for p in processes_with_marker(marker)}
        assert all("spawnhelper" in " ".join(parent.cmdline()) for parent in parents)
        runner.kill()
        runner.wait()

        def helper_alive() -> bool:
            return any(parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE for parent in parents)

        deadline = time.monotonic() + 10
        while (processes_with_marker(marker) or helper_alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with_marker(marker) == []
        assert not helper_alive()
    finally:
        runner.kill()
        runner.wait()
        for leftover in processes_with_marker(marker):
            leftover.kill()


class Recorded:
    """A watcher that writes down what the delegate tells it."""

    def __init__(self) -> None:
        self.said: list[tuple[str, object]] = []

    def on_started(self, pid: int) -> None:
        self.said.append(("started", pid))

    def on_failed(self, error: OSError) -> None:
        self.said.append(("failed", error))

    def on_exited(self, returncode: int) -> None:
        self.said.append(("exited", returncode))


@pytest.fixture
async def played() -> AsyncIterator[tuple[delegated.Delegate, socket.socket]]:
    """A delegate whose helper is played by the test, through the other end of its socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    process = subprocess.Popen(["true"])  # noqa: ASYNC220 (stands for the helper: its pid is reaped)
    delegate = delegated.Delegate(asyncio.get_running_loop(), ours, process.pid, grace=0.1)
    process.returncode = 0  # reaped by the delegate's close
    yield delegate, theirs
    await delegate.close()
    theirs.close()


def received_request(helper: socket.socket) -> tuple[object, ...]:
    """One request as the helper receives it: its three descriptors (closed here) and its fields."""
    data, ancillary, _, _ = helper.recvmsg(1 << 20, socket.CMSG_SPACE(3 * 4))
    descriptors = array.array("i")
    descriptors.frombytes(ancillary[0][2])
    assert len(descriptors) == 3
    for fd in descriptors:
        os.close(fd)
    request: tuple[object, ...] = marshal.loads(data)
    return request


def pipe_ends() -> tuple[int, int, int]:
    read, write = os.pipe()
    os.close(read)
    second_read, second_write = os.pipe()
    os.close(second_read)
    return os.open(os.devnull, os.O_RDONLY), write, second_write


async def test_a_helper_that_is_unable_leaves_every_command_to_the_runner(
    played: tuple[delegated.Delegate, socket.socket],
) -> None:
    delegate, helper = played
    helper.send(marshal.dumps(("unable", "no POSIX_SPAWN_SETSID")))
    assert await asyncio.wait_for(delegate.wait_ready(), 5) is False
    stdin, stdout, stderr = pipe_ends()
    taken = delegate.request(Recorded(), ["true"], cwd="/", env={}, stdin=stdin, stdout=stdout, stderr=stderr)
    assert taken is False
    for fd in (stdin, stdout, stderr):
        os.close(fd)  # still the caller's: closing them must work


async def test_replies_reach_the_commands_watcher_and_a_lost_helper_fails_what_runs(
    played: tuple[delegated.Delegate, socket.socket],
) -> None:
    delegate, helper = played
    helper.send(marshal.dumps(("ready",)))
    assert await asyncio.wait_for(delegate.wait_ready(), 5) is True
    watchers = [Recorded(), Recorded(), Recorded()]
    for watcher in watchers:
        stdin, stdout, stderr = pipe_ends()
        assert delegate.request(
            watcher, ["/bin/true"], cwd="/tmp", env={b"A": b"1"}, stdin=stdin, stdout=stdout, stderr=stderr
        )
        os.close(stdin)
        with pytest.raises(OSError):
            os.fstat(stdout)  # sent, then closed: the write ends are the helper's now
    requests = [received_request(helper) for _ in watchers]
    assert [request[1:] for request in requests] == [("/tmp", ["/bin/true"], {b"A": b"1"})] * 3
    first, second, third = (request[0] for request in requests)
    helper.send(marshal.dumps(("started", first, 4242)))
    helper.send(marshal.dumps(("exited", 4242, 3)))
    helper.send(marshal.dumps(("failed", second, 2, "No such file or directory", "/bin/true")))
    helper.send(marshal.dumps(("started", third, 4343)))
    await until(lambda: len(watchers[2].said) == 1)
    helper.close()  # the helper dies
    await until(lambda: len(watchers[2].said) == 2)
    assert watchers[0].said == [("started", 4242), ("exited", 3)]
    [(kind, error)] = watchers[1].said
    assert kind == "failed" and isinstance(error, FileNotFoundError) and error.filename == "/bin/true"
    assert watchers[2].said[0] == ("started", 4343)
    kind, error = watchers[2].said[1]
    assert kind == "failed" and isinstance(error, delegated.SpawnerLost) and "died" in str(error)
    assert delegate.usable is False


def test_the_helper_says_so_when_it_cannot_start_commands_in_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert spawnhelper._cannot_spawn_in_session() is None

    def without_setsid(*args: object, **kwargs: object) -> int:
        raise NotImplementedError("setsid is unavailable on this platform")

    monkeypatch.setattr(os, "posix_spawn", without_setsid)
    reason = spawnhelper._cannot_spawn_in_session()
    assert reason is not None and "sessions of their own" in reason


def write_ends() -> tuple[int, int]:
    unused, stdout, stderr = pipe_ends()
    os.close(unused)
    return stdout, stderr


async def test_requests_wait_while_the_helper_is_slow_to_read_and_all_arrive_in_order(
    played: tuple[delegated.Delegate, socket.socket],
) -> None:
    delegate, helper = played
    helper.send(marshal.dumps(("ready",)))
    assert await asyncio.wait_for(delegate.wait_ready(), 5) is True
    count = 60  # 60 requests of 16 KB: more than the socket holds while nobody reads
    stdin = os.open(os.devnull, os.O_RDONLY)  # the caller's, open for as long as it runs commands
    try:
        for index in range(count):
            stdout, stderr = write_ends()
            env = {b"N": str(index).encode(), b"PAD": b"x" * 16384}
            assert delegate.request(
                Recorded(), ["true"], cwd="/", env=env, stdin=stdin, stdout=stdout, stderr=stderr
            )
        helper.setblocking(False)
        received: list[int] = []
        async with asyncio.timeout(10):
            while len(received) < count:
                try:
                    request = received_request(helper)
                except BlockingIOError:
                    await asyncio.sleep(0.01)  # the delegate sends the rest when the loop says it can
                    continue
                received.append(int(request[3][b"N"]))
        assert received == list(range(count))
        assert delegate.usable
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            helper.recvmsg(1 << 20)  # nothing more: each request was sent once
        stdout, stderr = write_ends()
        assert delegate.request(
            Recorded(), ["true"], cwd="/", env={}, stdin=stdin, stdout=stdout, stderr=stderr
        )
        helper.settimeout(5)
        assert received_request(helper)[2] == ["true"]  # and the next one goes straight out
    finally:
        os.close(stdin)
