"""What commands produced: the values that ``when`` rules, checks and reports read.

A command's output is captured bounded (see :mod:`pgquartz.runner.executors.capture`):
a :class:`Captured` keeps the head and the tail of a stream and counts every
byte, so a command printing gigabytes never fills the runner's memory, while
rules and reports still see the beginning and the end of what it printed.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Mapping

from pgquartz.runner.model import records


class Captured(records.Record):
    """A bounded capture of one output stream.

    ``text`` is the kept head, then (if anything was dropped) a marker line,
    then the kept tail, decoded as UTF-8 (undecodable bytes replaced).
    ``total_bytes`` counts everything the stream carried; ``dropped_bytes``
    what was not kept.
    """

    text: str = ""
    total_bytes: int = 0
    dropped_bytes: int = 0

    @property
    def truncated(self) -> bool:
        return self.dropped_bytes > 0

    def lines(self) -> list[str]:
        """The text as lines, without a trailing empty line (as PgQuartz splits it)."""
        if not self.text:
            return []
        return self.text.removesuffix("\n").split("\n")

    def last_lines(self, count: int) -> list[str]:
        return self.lines()[-count:] if count > 0 else []


EMPTY = Captured()


class CommandState(enum.Enum):
    """How one command ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class CommandResult(records.Record):
    """The outcome of one command of one instance (or of one check).

    ``rc`` follows PgQuartz: a shell command's exit code (128 + N when killed
    by signal N), 0 or 1 for a query. ``error`` explains a failure the command's
    own output does not (a script that could not start, a cancellation, …).
    """

    name: str
    state: CommandState
    rc: int = 0
    stdout: Captured = EMPTY
    stderr: Captured = EMPTY
    started: datetime.datetime | None = None
    duration: float = 0.0
    error: str | None = None
    attempts: int = 1
    """How many times the command ran (more than 1 after retries)."""

    @property
    def retries(self) -> int:
        return self.attempts - 1

    @property
    def ok(self) -> bool:
        return self.state in (CommandState.SUCCEEDED, CommandState.SKIPPED)


class RetryAttempt(records.Record):
    """An attempt of a command failed with an error its ``retry`` lists; it runs again after ``delay``."""

    attempt: int
    """The attempt that failed (1 for the first run)."""
    attempts: int
    """How many attempts the retry allows in all."""
    error: str
    delay: float


OnRetry = Callable[[RetryAttempt], None]


class StepState(enum.Enum):
    """A step's state, as in PgQuartz: Waiting → Ready → Running → Done, or Skipped."""

    WAITING = "Waiting"
    SKIPPED = "Skipped"
    READY = "Ready"
    RUNNING = "Running"
    DONE = "Done"


class InstanceResult(records.Record):
    """The commands one instance (one matrix combination) of a step ran, in order."""

    step: str
    args: Mapping[str, str]
    commands: tuple[CommandResult, ...]

    @property
    def rc(self) -> int:
        return sum(command.rc for command in self.commands)

    @property
    def failed(self) -> bool:
        return any(not command.ok for command in self.commands)

    @property
    def stdout(self) -> str:
        return "".join(_with_newline(command.stdout.text) for command in self.commands)

    @property
    def stderr(self) -> str:
        return "".join(_with_newline(command.stderr.text) for command in self.commands)


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"
