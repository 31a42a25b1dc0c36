"""The outcome of a run: what the CLI turns into an exit code and ``--summary-file``.

The summary file is read by the operator from the pod's termination message,
which Kubernetes caps at 4096 bytes: :meth:`Summary.to_json` stays under a
byte budget by shortening lists, never by producing invalid JSON.
"""

from __future__ import annotations

import datetime
import enum
import json
from typing import Any

from pgquartz.runner.model import records
from pgquartz.runner.model.exitcodes import ExitCode
from pgquartz.runner.model.results import StepState


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    CHECK_FAILED = "check-failed"
    TIMED_OUT = "timed-out"
    INTERRUPTED = "interrupted"
    TERMINATED = "terminated"
    LOCK_NOT_ACQUIRED = "lock-not-acquired"
    LOCK_LOST = "lock-lost"
    ROLE_MISMATCH = "role-mismatch"
    FAILOVER = "failover"
    GATED = "gated"
    GATE_FAILED = "gate-failed"

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Outcome.SUCCEEDED: ExitCode.SUCCESS,
    Outcome.CHECK_FAILED: ExitCode.RUN_FAILED,
    Outcome.TIMED_OUT: ExitCode.RUN_FAILED,
    Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
    Outcome.TERMINATED: ExitCode.TERMINATED,
    Outcome.LOCK_NOT_ACQUIRED: ExitCode.LOCK_NOT_ACQUIRED,
    Outcome.LOCK_LOST: ExitCode.LOCK_LOST,
    Outcome.ROLE_MISMATCH: ExitCode.ROLE_MISMATCH,
    Outcome.FAILOVER: ExitCode.FAILOVER,
    Outcome.GATED: ExitCode.SUCCESS,
    Outcome.GATE_FAILED: ExitCode.GATE_FAILED,
}


class StepSummary(records.Record):
    name: str
    state: StepState
    rc: int
    duration: float
    instances: int
    failed_instances: int
    retries: tuple[tuple[str, int], ...] = ()
    """(command, retries summed over the step's instances), for commands that were retried."""


class Summary(records.Record):
    job: str
    outcome: Outcome
    message: str
    started: datetime.datetime
    finished: datetime.datetime
    steps: tuple[StepSummary, ...]
    failed_check: str | None = None
    check_retries: tuple[tuple[str, int], ...] = ()
    failover: dict[str, Any] | None = None
    """What changed when a failover was seen (connection, before, after, changes, action)."""
    gated: tuple[str, ...] = ()
    """Why the job's gates stayed closed (a gated or gate-failed run)."""
    budget: dict[str, Any] | None = None
    """The budget slot the run held: its ``key``, ``slot`` and the seconds ``waited`` for it."""

    @property
    def retries(self) -> int:
        """Retries of every command of the run, checks included."""
        return sum(count for step in self.steps for _, count in step.retries) + sum(
            count for _, count in self.check_retries
        )

    @property
    def exit_code(self) -> ExitCode:
        return self.outcome.exit_code

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def failed_steps(self) -> list[str]:
        return [step.name for step in self.steps if step.failed_instances]

    def to_dict(self) -> dict[str, Any]:
        data = self._core()
        if self.retries:
            data["retries"] = self.retries
        if self.failover is not None:
            data["failover"] = self.failover
        if self.gated:
            data["gated"] = list(self.gated)
        if self.budget is not None:
            data["budget"] = self.budget
        return data

    def _core(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "result": self.outcome.value,
            "exitCode": int(self.exit_code),
            "message": self.message,
            "startTime": self.started.isoformat(),
            "completionTime": self.finished.isoformat(),
            "duration": round(self.duration, 3),
            "failedSteps": self.failed_steps,
            "failedCheck": self.failed_check,
            "steps": [
                {
                    "name": step.name,
                    "state": step.state.value,
                    "rc": step.rc,
                    "duration": round(step.duration, 3),
                    "instances": step.instances,
                    "failedInstances": step.failed_instances,
                    **({"retries": dict(step.retries)} if step.retries else {}),
                }
                for step in self.steps
            ],
            **({"checkRetries": dict(self.check_retries)} if self.check_retries else {}),
        }

    def to_json(self, *, max_bytes: int = 4096) -> str:
        """Compact JSON within ``max_bytes``: drops per-step detail first, then shortens lists."""
        data = self.to_dict()
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= max_bytes:
            return text
        data["steps"] = []
        data["stepsOmitted"] = True
        data.pop("checkRetries", None)
        if data.get("gated"):
            data["gated"] = [reason[:300] for reason in data["gated"][:3]]
        for limit in (50, 20, 5, 0):
            data["failedSteps"] = self.failed_steps[:limit]
            data["failedStepsTotal"] = len(self.failed_steps)
            data["message"] = self.message[: max(200, limit * 10)]
            if data["failedCheck"]:
                data["failedCheck"] = data["failedCheck"][:200]
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            if len(text.encode()) <= max_bytes:
                return text
        return json.dumps(
            {"job": self.job[:100], "result": self.outcome.value, "exitCode": int(self.exit_code)}
        )
