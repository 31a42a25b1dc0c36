"""``gates``: conditions on the cluster that must hold before work starts.

No scheduler in this field waits for replication to catch up, a long
transaction to end or a backup to finish before starting heavy maintenance.
A job's ``gates`` are evaluated once its lock is held, before the first step; a
step's before its first instance. Built-in gates read the server's own views
(``maxReplicationLag``, ``maxTransactionAge``, ``noBackupRunning``); a custom
gate is a command with an expectation, exactly like a check. All must hold at
once; if they do not, they are evaluated again every ``interval`` for up to
``wait`` (inside the job's ``timeout``), then ``onTimeout`` decides: ``skip``
(the default) ends the run as *gated* with exit code 0, or skips the step;
``fail`` ends the run as *gate-failed* (exit 7), or fails the step.
"""

from __future__ import annotations

import datetime
import enum
import re
from typing import Annotated, Any, Self

import pydantic

from pgquartz.runner.model import durations, records
from pgquartz.runner.model.base import JobModel, Whole

_SIZE = re.compile(r"^\s*(\d+)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_FACTORS = {
    None: 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
    "TB": 1000**4,
    "TiB": 1024**4,
}
LAG_PATTERN = r"^\s*\d+\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$|" + durations.PATTERN


class Lag(records.Record):
    """A replication lag limit: WAL bytes, or time."""

    bytes: int | None = None
    seconds: float | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text


def parse_lag(value: Any) -> Lag:
    """``64MB``, ``16MiB``, ``1048576`` (bytes) or a duration (``30s``, ``5m``)."""
    if isinstance(value, Lag):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected WAL bytes (64MB, 16MiB) or a duration (30s, 5m), got {value!r}")
    text = str(value).strip()
    match = _SIZE.match(text)
    if match is not None:
        return Lag(bytes=int(match.group(1)) * _FACTORS[match.group(2)], text=text)
    try:
        seconds = durations.parse(text).total_seconds()
    except ValueError:
        raise ValueError(
            f"expected WAL bytes (64MB, 16MiB, 1048576) or a duration (30s, 5m), got {text!r}"
        ) from None
    return Lag(seconds=seconds, text=text)


LagLimit = Annotated[
    Lag,
    pydantic.PlainValidator(parse_lag),
    pydantic.PlainSerializer(str, return_type=str),
    pydantic.WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": LAG_PATTERN}],
            "description": "WAL bytes (64MB, 16MiB, a number) or a duration (30s, 5m).",
        }
    ),
]


class OnTimeout(enum.StrEnum):
    SKIP = "skip"
    FAIL = "fail"


BUILT_IN = ("maxReplicationLag", "maxTransactionAge", "noBackupRunning")


def _only_true(value: bool | None) -> bool | None:
    if value is False:
        raise ValueError("noBackupRunning: false gates nothing; leave the gate out instead")
    return value


class Gate(JobModel):
    """One condition: a built-in one on a connection, or a command with an expectation."""

    name: str = ""
    connection: str | None = pydantic.Field(
        default=None,
        description="The connection a built-in gate reads; may be left out when the job has only one.",
    )
    max_replication_lag: LagLimit | None = pydantic.Field(
        default=None,
        alias="maxReplicationLag",
        description=(
            "On a primary, the most any standby may be behind (pg_stat_replication); on a standby,"
            " how far its replay is behind what it received, or behind in time."
        ),
    )
    max_transaction_age: durations.Duration | None = pydantic.Field(
        default=None,
        alias="maxTransactionAge",
        description="The oldest open transaction on the server (not the runner's own) may be this old.",
    )
    no_backup_running: Annotated[bool | None, pydantic.AfterValidator(_only_true)] = pydantic.Field(
        default=None,
        alias="noBackupRunning",
        description="No base backup (pg_basebackup) or low-level backup (pg_backup_start) in progress.",
    )
    type: str | None = pydantic.Field(
        default=None, description="A custom gate: 'shell' or a connection, as for a check."
    )
    inline: str | None = None
    file: str | None = None
    rc: Whole | None = pydantic.Field(default=None, description="A custom gate's expected exit code (0).")
    expected: str | None = None
    unexpected: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_condition(self) -> Self:
        self._check_condition()
        return self

    def _check_condition(self) -> None:
        built_in = [key for key in BUILT_IN if self._built_in(key) is not None]
        custom = [
            key
            for key in ("type", "inline", "file", "rc", "expected", "unexpected")
            if getattr(self, key) is not None
        ]
        if len(built_in) > 1:
            raise ValueError(f"one condition per gate: {' and '.join(built_in)} are two gates")
        if built_in and custom:
            raise ValueError(f"{built_in[0]} is a built-in gate: it takes no {', '.join(custom)}")
        if not built_in and not custom:
            raise ValueError(
                f"a gate needs a condition: one of {', '.join(BUILT_IN)}, or a command"
                " (type, inline or file, and expected/unexpected/rc) like a check"
            )
        if custom:
            if self.connection is not None:
                raise ValueError("a custom gate names its connection in 'type', not 'connection'")
            if (self.inline is None) == (self.file is None):
                raise ValueError("a custom gate needs 'inline' or 'file' (one of them)")

    def _built_in(self, key: str) -> Any:
        return {
            "maxReplicationLag": self.max_replication_lag,
            "maxTransactionAge": self.max_transaction_age,
            "noBackupRunning": self.no_backup_running,
        }[key]

    @property
    def kind(self) -> str:
        """``maxReplicationLag``, ``maxTransactionAge``, ``noBackupRunning`` or ``custom``."""
        return next((key for key in BUILT_IN if self._built_in(key) is not None), "custom")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "maxReplicationLag":
            return f"replication lag at most {self.max_replication_lag}"
        if self.kind == "maxTransactionAge":
            assert self.max_transaction_age is not None
            return f"no transaction older than {durations.format(self.max_transaction_age)}"
        if self.kind == "noBackupRunning":
            return "no backup running"
        return (
            (self.inline or self.file or "").strip().splitlines()[0][:60]
            if (self.inline or self.file)
            else ""
        )

    def check_fields(self) -> dict[str, Any]:
        """A custom gate's command, as the fields of a :class:`~pgquartz.runner.model.job.Check`."""
        fields: dict[str, Any] = {"name": self.name, "type": self.type or "shell", "rc": self.rc or 0}
        for key in ("inline", "file", "expected", "unexpected"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        return fields


def _positive_interval(value: datetime.timedelta) -> datetime.timedelta:
    if value.total_seconds() < 0.1:
        raise ValueError("interval must be at least 100ms")
    return value


class Gates(JobModel):
    """The gates of the job or of a step, and what to do while they are closed."""

    require: list[Gate] = pydantic.Field(min_length=1, description="Conditions that must all hold.")
    wait: durations.Duration = pydantic.Field(
        default=durations.Duration(0),
        description="How long to wait for the gates to open (evaluated once when 0), inside the timeout.",
    )
    interval: Annotated[durations.Duration, pydantic.AfterValidator(_positive_interval)] = pydantic.Field(
        default=durations.Duration(seconds=5),
        description="How often closed gates are evaluated again while waiting.",
    )
    on_timeout: OnTimeout = pydantic.Field(
        default=OnTimeout.SKIP,
        alias="onTimeout",
        description=(
            "skip: the run ends as 'gated' with exit code 0 (a step is skipped); fail: the run ends as"
            " 'gate-failed' with exit code 7 (a step fails)."
        ),
    )
