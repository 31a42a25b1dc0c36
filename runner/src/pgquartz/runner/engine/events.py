"""What happens during a run, as values: the engine emits them, reporters render them.

The engine knows nothing about terminals, JSON or files; it calls one
``emit(event)`` callback. Every event converts to a flat JSON-able dict for log
collectors (``kind`` names it).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from pgquartz.runner.model import records
from pgquartz.runner.model.results import CommandResult, StepState


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Event(records.Record):
    time: datetime.datetime = records.field(default_factory=_now)

    @property
    def kind(self) -> str:
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind, "time": self.time.isoformat()}
        for name in records.fields(self):
            if name != "time":
                data[name] = _jsonable(getattr(self, name))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, CommandResult):
        return {
            "name": value.name,
            "state": value.state.value,
            "rc": value.rc,
            "duration": round(value.duration, 6),
            "error": value.error,
            "attempts": value.attempts,
            "stdout_bytes": value.stdout.total_bytes,
            "stderr_bytes": value.stderr.total_bytes,
        }
    if isinstance(value, StepState):
        return value.value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class JobStarted(Event):
    job: str
    file: str
    steps: int
    instances: int
    checks: int
    parallel: int
    timeout: float | None


class StepStarted(Event):
    step: str
    instances: int


class StepSkipped(Event):
    step: str
    reason: str
    rule_error: bool = False


class CommandStarted(Event):
    step: str | None
    """None for a check."""
    instance: Mapping[str, str]
    command: str


class CommandFinished(Event):
    step: str | None
    instance: Mapping[str, str]
    command: str
    result: CommandResult
    debug: bool = False
    """Whether reporters should show the command's output (the job's or the CLI's ``debug``)."""


class CommandRetried(Event):
    """An attempt failed with an error its ``retry`` lists; the command runs again after ``delay``."""

    step: str | None
    instance: Mapping[str, str]
    command: str
    attempt: int
    attempts: int
    error: str
    delay: float


class Failover(Event):
    """A connection reached another server than the run's first one."""

    connection: str
    changes: tuple[str, ...]
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    action: str
    """``abort`` (the run stops) or ``continue``."""


class GatesClosed(Event):
    """Gates do not hold (first evaluation, or a change of why); ``step`` None for the job's."""

    step: str | None
    reasons: tuple[str, ...]
    waiting: float
    """Seconds left to wait for them (0: no more waiting)."""


class GatesOpened(Event):
    step: str | None
    waited: float


class StepFinished(Event):
    step: str
    state: StepState
    rc: int
    duration: float
    failed_instances: tuple[Mapping[str, str], ...]


class ChecksStarted(Event):
    checks: int


class CheckFinished(Event):
    check: str
    instance: Mapping[str, str]
    passed: bool
    reason: str | None
    result: CommandResult


class Notice(Event):
    """Something a person should read that is not a step or check (git, log file, lock…)."""

    level: str  # "info", "warning" or "error"
    message: str


class JobFinished(Event):
    summary: Any  # engine.summary.Summary; Any keeps this module free of a cycle


Emit = Callable[[Event], None]
