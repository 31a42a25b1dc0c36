"""The outcome of a run: what the CLI turns into an exit code and ``--summary-file``.

The summary file is read by the operator from the pod's termination message,
which Kubernetes caps at 4096 bytes: :meth:`Summary.to_json` stays under a
byte budget by shortening lists, never by producing invalid JSON.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from typing import Any

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
}


@dataclasses.dataclass(frozen=True)
class StepSummary:
    name: str
    state: StepState
    rc: int
    duration: float
    instances: int
    failed_instances: int


@dataclasses.dataclass(frozen=True)
class Summary:
    job: str
    outcome: Outcome
    message: str
    started: datetime.datetime
    finished: datetime.datetime
    steps: tuple[StepSummary, ...]
    failed_check: str | None = None

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
                }
                for step in self.steps
            ],
        }

    def to_json(self, *, max_bytes: int = 4096) -> str:
        """Compact JSON within ``max_bytes``: drops per-step detail first, then shortens lists."""
        data = self.to_dict()
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= max_bytes:
            return text
        data["steps"] = []
        data["stepsOmitted"] = True
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
