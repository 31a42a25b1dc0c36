"""Human-readable run reports: what ran, how long, what failed and why.

Follows PgQuartz's split, which cron setups rely on: progress goes to stdout,
failures to stderr, so ``pgquartz -c job.yml >/dev/null`` mails only errors.
A failed command shows its last lines of output; ``debug`` shows all the
output that was kept.
"""

from __future__ import annotations

import datetime
import time
from typing import ClassVar, TextIO

from pgquartz.runner.engine import events
from pgquartz.runner.model.results import CommandResult, CommandState
from pgquartz.runner.plan import matrix

TAIL_LINES = 10


SILENT: frozenset[type[events.Event]] = frozenset({events.CommandStarted})
"""Events :func:`render` makes no line of (a command's start: its end says it all)."""


class ConsoleReporter:
    ignores: ClassVar[frozenset[type[events.Event]]] = SILENT
    """What the engine need not emit for it (:meth:`pgquartz.runner.report.Fanout.wants`)."""

    def __init__(self, *, out: TextIO, err: TextIO, color: bool = False) -> None:
        self._out = out
        self._err = err
        self._color = color

    def __call__(self, event: events.Event) -> None:
        lines = render(event)
        if not lines:
            return
        written = set()
        for stream, line in lines:
            target = self._err if stream == "err" else self._out
            target.write(self._paint(line) + "\n" if self._color else line + "\n")
            written.add(target)
        for target in written:
            target.flush()

    def _paint(self, line: str) -> str:
        if not self._color:
            return line
        for mark, code in (("✗", "31"), ("✓", "32"), ("⤼", "33"), ("!", "33")):
            if mark in line[:14]:
                return f"\033[{code}m{line}\033[0m"
        return line


def render(event: events.Event) -> list[tuple[str, str]]:
    """Lines for one event, each with its stream: ``out`` or ``err``."""
    if isinstance(event, events.CommandStarted):
        return []  # the most frequent event says nothing: its command's end does
    stamp = _stamp(event.time)
    if isinstance(event, events.CommandFinished):  # the next most frequent
        return _command_lines(stamp, event)
    out: list[tuple[str, str]] = []
    if isinstance(event, events.JobStarted):
        limit = f", timeout {_seconds(event.timeout)}" if event.timeout else ""
        out.append(
            (
                "out",
                f"{stamp} ▶ job {event.job}: {event.steps} steps, {event.instances} instances,"
                f" {event.checks} checks, parallel {event.parallel}{limit}",
            )
        )
    elif isinstance(event, events.StepStarted):
        many = f" ({event.instances} instances)" if event.instances > 1 else ""
        out.append(("out", f"{stamp}   step {event.step!r} started{many}"))
    elif isinstance(event, events.StepSkipped):
        stream = "err" if event.rule_error else "out"
        out.append((stream, f"{stamp}   ⤼ step {event.step!r} skipped: {event.reason}"))
    elif isinstance(event, events.StepFinished):
        if event.failed_instances:
            which = ", ".join(matrix.label(args) or "-" for args in event.failed_instances[:5])
            more = f" and {len(event.failed_instances) - 5} more" if len(event.failed_instances) > 5 else ""
            out.append(
                (
                    "err",
                    f"{stamp}   ✗ step {event.step!r} failed (rc {event.rc}) in"
                    f" {_seconds(event.duration)}; failing instances: {which}{more}",
                )
            )
        else:
            out.append(("out", f"{stamp}   ✓ step {event.step!r} done in {_seconds(event.duration)}"))
    elif isinstance(event, events.ChecksStarted):
        out.append(("out", f"{stamp}   checks: {event.checks} to run"))
    elif isinstance(event, events.CheckFinished):
        label = _with_args(event.check, event.instance)
        if event.passed:
            out.append(("out", f"{stamp}   ✓ check {label} passed"))
        else:
            out.append(("err", f"{stamp}   ✗ check {label} failed: {event.reason}"))
            out.extend(("err", line) for line in _tail(event.result))
    elif isinstance(event, events.CommandRetried):
        where = _with_args(event.step, event.instance) if event.step is not None else "check"
        out.append(
            (
                "out",
                f"{stamp}     ↻ {where}: {event.command!r} failed ({event.error}), attempt {event.attempt}"
                f" of {event.attempts}; again in {_seconds(event.delay)}",
            )
        )
    elif isinstance(event, events.Failover):
        then = "stopping the run" if event.action == "abort" else "going on (onFailover: continue)"
        out.append(
            (
                "err",
                f"{stamp}   ! connection {event.connection!r} reaches another server than when the run began:"
                f" {'; '.join(event.changes)}; {then}",
            )
        )
    elif isinstance(event, events.GatesClosed):
        whose = f"step {event.step!r}" if event.step is not None else "the job"
        wait = f"; waiting up to {_seconds(event.waiting)}" if event.waiting > 0 else ""
        out.append(("out", f"{stamp}   ⏸ gates of {whose} closed: {'; '.join(event.reasons)}{wait}"))
    elif isinstance(event, events.GatesOpened):
        whose = f"step {event.step!r}" if event.step is not None else "the job"
        out.append(("out", f"{stamp}   ✓ gates of {whose} open after {_seconds(event.waited)}"))
    elif isinstance(event, events.Notice):
        mark = {"warning": "! ", "error": "✗ "}.get(event.level, "")
        out.append(("err" if event.level != "info" else "out", f"{stamp}   {mark}{event.message}"))
    elif isinstance(event, events.JobFinished):
        summary = event.summary
        verdict = "SUCCEEDED" if summary.succeeded else "FAILED"
        stream = "out" if summary.succeeded else "err"
        mark = "✓" if summary.succeeded else "✗"
        if summary.outcome.value == "gated":
            verdict, stream, mark = "SKIPPED (gated)", "out", "⤼"
        out.append(
            (
                stream,
                f"{stamp} {mark} job {summary.job} {verdict} in {_seconds(summary.duration)}"
                f" (exit {int(summary.exit_code)}): {summary.message}",
            )
        )
    return out


_last_stamp: list[tuple[int, str]] = [(-1, "")]


def _stamp(moment: datetime.datetime) -> str:
    """``HH:MM:SS`` in local time, formatted once per second (thousands of events share one)."""
    second = int(moment.timestamp())
    cached_second, text = _last_stamp[0]
    if second != cached_second:
        text = time.strftime("%H:%M:%S", time.localtime(second))
        _last_stamp[0] = (second, text)
    return text


def _command_lines(stamp: str, event: events.CommandFinished) -> list[tuple[str, str]]:
    result = event.result
    where = _with_args(event.step, event.instance) if event.step is not None else "check"
    lines: list[tuple[str, str]] = []
    if result.state is CommandState.SUCCEEDED and event.step is None:
        if event.debug:
            lines.append(("out", f"{stamp}     · check {event.command!r} exited 0"))
            lines.extend(("out", line) for line in _output(result))
    elif result.state is CommandState.SUCCEEDED:
        took = _seconds(result.duration) + (f", {result.attempts} attempts" if result.attempts > 1 else "")
        lines.append(("out", f"{stamp}     ✓ {where}: {event.command!r} ({took})"))
        if event.debug:
            lines.extend(("out", line) for line in _output(result))
    elif result.state is CommandState.SKIPPED:
        lines.append(("out", f"{stamp}     ⤼ {where}: {event.command!r} skipped: {result.error}"))
    elif event.step is None:
        # a check's command: CheckFinished says whether its outcome was the expected one
        if event.debug:
            lines.append(("out", f"{stamp}     · check {event.command!r} exited {result.rc}"))
            lines.extend(("out", line) for line in _output(result))
    else:
        why = f"exit {result.rc}" + (f", {result.error}" if result.error else "")
        if result.attempts > 1:
            why += f", {result.attempts} attempts"
        if result.state is CommandState.CANCELLED:
            why = result.error or "cancelled"
        lines.append(
            (
                "err",
                f"{stamp}     ✗ {where}: {event.command!r} failed ({why}) after {_seconds(result.duration)}",
            )
        )
        lines.extend(("err", line) for line in (_output(result) if event.debug else _tail(result)))
    return lines


def _with_args(name: str | None, args: dict[str, str] | object) -> str:
    label = matrix.label(args) if args and isinstance(args, dict) else ""
    return f"{name!r} [{label}]" if label else repr(name)


def _tail(result: CommandResult) -> list[str]:
    lines = []
    for title, captured in (("stdout", result.stdout), ("stderr", result.stderr)):
        last = captured.last_lines(TAIL_LINES)
        if last:
            more = f", last {len(last)} lines" if len(captured.lines()) > len(last) else ""
            lines.append(f"        ┌ {title}{more}")
            lines.extend(f"        │ {line}" for line in last)
    return lines


def _output(result: CommandResult) -> list[str]:
    lines = []
    for title, captured in (("stdout", result.stdout), ("stderr", result.stderr)):
        if captured.text:
            lines.append(f"        ┌ {title} ({captured.total_bytes} bytes)")
            lines.extend(f"        │ {line}" for line in captured.lines())
    return lines


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"
