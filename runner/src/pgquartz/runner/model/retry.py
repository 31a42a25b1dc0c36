"""``retry``: repeat a command after a transient error, and only then.

PgQuartz (and pg_cron, pg_timetable) retry nothing; Argo and CronJobs retry
everything. A maintenance command that loses a serialization race, a deadlock
or its session to a failover is worth repeating; one that hits a constraint or
a typo is not. So a retry names the errors it is for: PostgreSQL condition
names, SQLSTATEs or classes for SQL (``on``), exit codes for shell
(``exitCodes``); any other error fails the command at once. Delays grow
exponentially from ``backoff`` (with jitter, capped at ``maxBackoff``), all
inside the job's ``timeout``. A connection's ``retry`` is the default for the
SQL commands that name it.

A session lost mid-command counts as ``connection_failure`` (08006) even when
the client, not the server, noticed. Retrying a command reruns it from its
start, except in ``batchMode``, where the statements that already committed are
not run again (see docs/job-file.md).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Annotated, Any, Self

import pydantic

from pgquartz.runner.model import durations, sqlstates
from pgquartz.runner.model.base import JobModel, Whole

MAX_ATTEMPTS = 100

CONNECTION_LOST = "08006"
"""The SQLSTATE a session lost without an error from the server counts as (connection_failure)."""


def _known_conditions(value: list[str]) -> list[str]:
    for condition in value:
        sqlstates.resolve(condition)  # raises with "did you mean"
    return value


def _real_exit_codes(value: list[int]) -> list[int]:
    for code in value:
        if not 1 <= code <= 255:
            raise ValueError(f"exit code {code} cannot mean failure: use 1 to 255")
    return value


class Retry(JobModel):
    """Which errors repeat a command, how often, and how long to wait in between."""

    on: Annotated[list[str], pydantic.AfterValidator(_known_conditions)] = pydantic.Field(
        default_factory=list,
        description=(
            "SQL errors worth repeating the command for: PostgreSQL condition names"
            " (serialization_failure, deadlock_detected, lock_not_available, admin_shutdown,"
            " connection_failure), SQLSTATEs (40001) or classes (40)."
        ),
    )
    exit_codes: Annotated[list[Whole], pydantic.AfterValidator(_real_exit_codes)] = pydantic.Field(
        default_factory=list,
        alias="exitCodes",
        description="Exit codes of a shell command worth repeating it for (e.g. 75, EX_TEMPFAIL).",
    )
    attempts: Whole = pydantic.Field(
        default=3, ge=1, le=MAX_ATTEMPTS, description="How many times the command may run in all."
    )
    backoff: durations.Duration = pydantic.Field(
        default=durations.Duration(seconds=1),
        description="The wait before the first retry; it doubles for each further one (with jitter).",
    )
    max_backoff: durations.Duration = pydantic.Field(
        default=durations.Duration(minutes=1),
        alias="maxBackoff",
        description="The longest wait between two attempts.",
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _on_from_yaml_11(cls, data: Any) -> Any:
        # Job files come through our own loader (keys stay strings), but a PgQuartzJob
        # written with a YAML 1.1 tool may arrive with `on` turned into `true`.
        if isinstance(data, Mapping) and True in data and "on" not in data:
            return {("on" if key is True else key): item for key, item in data.items()}
        return data

    @pydantic.model_validator(mode="after")
    def _says_which_errors(self) -> Self:
        if not self.on and not self.exit_codes:
            raise ValueError(
                "say which errors to retry: 'on' (SQL conditions, e.g. [serialization_failure]) or"
                " 'exitCodes' (shell, e.g. [75]); nothing is retried by default"
            )
        return self

    def patterns(self) -> tuple[str, ...]:
        """The SQLSTATEs and classes ``on`` stands for."""
        return tuple(pattern for condition in self.on for pattern in sqlstates.resolve(condition))

    def retries_sqlstate(self, sqlstate: str | None) -> bool:
        """Whether an SQL error with this SQLSTATE (None: the session was lost) is worth repeating."""
        state = sqlstate or CONNECTION_LOST
        return any(sqlstates.matches(state, pattern) for pattern in self.patterns())

    def retries_exit_code(self, rc: int) -> bool:
        return rc in self.exit_codes

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first): exponential, jittered.

        Half of the exponential step is fixed, half random ("equal jitter"), so parallel
        instances that failed together do not come back together.
        """
        growth = float(2 ** min(retry - 1, 30))
        step = min(self.max_backoff.total_seconds(), self.backoff.total_seconds() * growth)
        return step / 2 + rng.uniform(0, step / 2)


def connection_retry(value: Retry | None) -> Retry | None:
    """A connection's retry is the default of its SQL commands: SQL conditions only, no exit codes."""
    if value is not None and value.exit_codes:
        raise ValueError("a connection's retry is for SQL errors: use 'on', not 'exitCodes'")
    return value
