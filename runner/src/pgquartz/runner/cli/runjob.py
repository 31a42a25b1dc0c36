"""``pgquartz run``: load, pull, run under signal handling, report, exit with the contract's code.

SIGINT and SIGTERM cancel the run: the engine stops every command's process
group (and, with a lock, releases it) before the process exits with 130 or
143. A second signal while stopping does not skip that cleanup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import pathlib
import re
import signal
import sys
import time
from typing import TextIO

from pgquartz.runner import loader, report
from pgquartz.runner.cli import collector, inspect
from pgquartz.runner.engine import events
from pgquartz.runner.engine import run as engine
from pgquartz.runner.engine.dispatch import ConnectionExecutor, Dispatcher
from pgquartz.runner.engine.summary import Outcome, Summary
from pgquartz.runner.executors.capture import Limits
from pgquartz.runner.executors.identity import FailoverSeen
from pgquartz.runner.executors.shell import ShellExecutor
from pgquartz.runner.model.exitcodes import ExitCode
from pgquartz.runner.model.job import pulls_from_git
from pgquartz.runner.model.problems import JobFileError
from pgquartz.runner.report import console, jsonlines, logfile

_SIZE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 2MiB, 512k, 1048576)")
    return int(match.group(1)) * _FACTORS[match.group(2).lower()]


def main(args: argparse.Namespace, path: str) -> int:
    try:
        limits = Limits.total(parse_size(args.max_output))
    except ValueError as error:
        print(f"pgquartz: --max-output: {error}", file=sys.stderr)
        return ExitCode.INVALID_JOB
    loaded = inspect.load_or_report(path)
    if loaded is None:
        return ExitCode.INVALID_JOB
    notices: list[events.Notice] = []
    if not args.no_git_pull and pulls_from_git(loaded.job.git):
        from pgquartz.runner import gitpull  # jobs that pull only

        pulled = gitpull.update(loaded.job.git, job_dir=loaded.path.resolve().parent)
        if pulled is not None:
            notices.append(events.Notice(level=pulled.level, message=pulled.message))
            if pulled.updated:  # the job file itself may have changed
                try:
                    loaded = loader.load(path)
                except JobFileError as error:
                    inspect.report_problems(error)
                    return ExitCode.INVALID_JOB
    debug = bool(args.debug or loaded.job.debug)
    fanout = report.Fanout([_reporter(args.log_format, debug)])
    with contextlib.ExitStack() as stack:
        if loaded.job.log_file:
            log_path = logfile.resolve(loaded.job.log_file, job=loaded.name)
            try:
                fanout.add(logfile.LogFileReporter(stack.enter_context(logfile.open_log(log_path))))
            except OSError as error:
                notices.append(
                    events.Notice(level="warning", message=f"cannot write logFile {str(log_path)!r}: {error}")
                )
        collector.resume()  # start-up is over: what it made lives as long as the run
        summary = asyncio.run(
            _run(
                loaded,
                emit=fanout,
                notices=notices,
                limits=limits,
                debug=debug,
                kill_grace=args.kill_grace,
                announce_commands=fanout.wants(events.CommandStarted),
            )
        )
    if args.summary_file:
        _write_summary(summary, pathlib.Path(args.summary_file))
    return int(summary.exit_code)


def _reporter(log_format: str, debug: bool) -> events.Emit:
    if log_format == "json":
        return jsonlines.JsonLinesReporter(out=sys.stdout, debug=debug)
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    return console.ConsoleReporter(out=sys.stdout, err=sys.stderr, color=color)


async def _run(
    loaded: loader.LoadedJob,
    *,
    emit: events.Emit,
    notices: list[events.Notice],
    limits: Limits,
    debug: bool,
    kill_grace: float,
    announce_commands: bool = True,
) -> Summary:
    finished: list[Summary] = []

    def record(event: events.Event) -> None:
        emit(event)
        if isinstance(event, events.JobFinished):
            finished.append(event.summary)

    received: list[signal.Signals] = []
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if not received:
            task.cancel()
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    for notice in notices:
        record(notice)
    shell = ShellExecutor(workdir=loaded.workdir, limits=limits, kill_grace=kill_grace)
    connections: dict[str, ConnectionExecutor] = {}

    def report_failover(seen: FailoverSeen) -> None:
        dispatcher.report_failover(seen)  # the dispatcher is made after its executors

    if loaded.job.connections:
        from pgquartz.runner.executors import postgres  # psycopg is imported only for jobs that use it

        connections = {
            name: postgres.PostgresExecutor(
                name=name,
                connection=connection,
                application_name=f"pgquartz/{loaded.name}",
                max_sessions=loaded.job.parallel,
                limits=limits,
                on_failover=report_failover,
            )
            for name, connection in loaded.job.connections.items()
        }
    dispatcher = Dispatcher(workdir=loaded.workdir, shell=shell, connections=connections)
    steps_guard: engine.StepsGuard = engine.no_guard
    if loaded.job.etcd_config is not None:
        from pgquartz.runner.lock import guard  # the etcd client only for jobs that lock

        timeout = loaded.job.timeout
        identified_by = loaded.job.budget_connection()
        steps_guard = functools.partial(
            guard.hold,
            loaded.job.etcd_config,
            job_name=loaded.name,
            stop_budget=kill_grace + 1.0,
            # a little before the engine's own timeout, so that giving up says why
            deadline=time.monotonic() + timeout.total_seconds() - 0.05 if timeout else None,
            on_waiting=lambda message: record(events.Notice(level="info", message=message)),
            cluster_identity=(
                functools.partial(_cluster_identity, connections[identified_by]) if identified_by else None
            ),
        )
    try:
        return await engine.run(
            loaded,
            dispatcher=dispatcher,
            emit=record,
            steps_guard=steps_guard,
            debug=debug,
            cancelled_outcome=lambda: _signal_outcome(received),
            announce_commands=announce_commands,
        )
    except asyncio.CancelledError:
        if not received or not finished:
            raise
        return finished[-1]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _signal_outcome(received: list[signal.Signals]) -> Outcome:
    if received and received[0] == signal.SIGTERM:
        return Outcome.TERMINATED
    return Outcome.INTERRUPTED


def _write_summary(summary: Summary, path: pathlib.Path) -> None:
    try:
        with path.open("w", encoding="utf-8") as stream:
            _write(stream, summary.to_json())
    except OSError as error:
        print(f"pgquartz: cannot write the summary file {str(path)!r}: {error}", file=sys.stderr)


def _write(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")


async def _cluster_identity(connection: ConnectionExecutor) -> str:
    """The database cluster's ``system_identifier``, what a budget without a key is keyed by."""
    from pgquartz.runner.lock import budget

    row = await connection.fetch(budget.IDENTITY_QUERY)
    if not row or not row[0]:
        raise RuntimeError("the server did not say its system_identifier (pg_control_system())")
    return row[0]
