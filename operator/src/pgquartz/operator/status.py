"""Jobs and pods → a PgQuartzJob's status: pure functions, following the API conventions.

Conditions have the ``metav1.Condition`` shape (type, status, observedGeneration,
lastTransitionTime, CamelCase reason, message); ``lastTransitionTime`` only moves
when the status flips. ``Ready`` summarises whether the objects are in place;
``LastRunSucceeded`` follows the newest finished run, whose details (exit code,
failed steps) come from the runner's summary in the pod's termination message.
No ``phase`` enum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

READY = "Ready"
LAST_RUN_SUCCEEDED = "LastRunSucceeded"


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any]:
    """The condition of type ``type_``, or an empty mapping if there is none."""
    return next((c for c in conditions if c.get("type") == type_), {})


def condition(
    existing: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The conditions with ``type_`` set; its transition time kept if its status did not change."""
    value = "Unknown" if status is None else ("True" if status else "False")
    previous = find(existing, type_)
    since = previous["lastTransitionTime"] if previous.get("status") == value else now
    updated = {
        "type": type_,
        "status": value,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }
    return [dict(c) for c in existing if c.get("type") != type_] + [updated]


def run_summary(termination_message: str | None) -> dict[str, Any] | None:
    """The runner's ``--summary-file`` JSON, if the pod left one."""
    if not termination_message:
        return None
    try:
        data = json.loads(termination_message)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "exitCode" in data else None


def job_outcome(job: Mapping[str, Any]) -> str:
    """``Succeeded``, ``Failed`` or ``Running``, from a batch/v1 Job's conditions."""
    for item in job.get("status", {}).get("conditions", []) or []:
        if item.get("status") != "True":
            continue
        if item.get("type") == "Complete":
            return "Succeeded"
        if item.get("type") == "Failed":
            return "Failed"
    return "Running"


def last_run(job: Mapping[str, Any], summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """``status.lastRun`` for one Job, enriched with the runner's summary when there is one."""
    status = job.get("status", {})
    outcome = job_outcome(job)
    run: dict[str, Any] = {"job": job["metadata"]["name"], "result": outcome}
    if status.get("startTime"):
        run["startTime"] = status["startTime"]
    if status.get("completionTime"):
        run["completionTime"] = status["completionTime"]
    if summary is not None:
        run["exitCode"] = int(summary["exitCode"])
        run["failedSteps"] = list(summary.get("failedSteps") or [])
        run["message"] = str(summary.get("message", ""))[:1024]
        if isinstance(summary.get("result"), str):
            run["outcome"] = summary["result"][:64]
        if isinstance(summary.get("retries"), int) and summary["retries"] > 0:
            run["retries"] = summary["retries"]
        if isinstance(summary.get("gated"), list) and summary["gated"]:
            run["gated"] = [str(reason)[:300] for reason in summary["gated"][:5]]
        failover = summary.get("failover")
        if isinstance(failover, dict):
            changes = failover.get("changes")
            run["failover"] = {
                "connection": str(failover.get("connection", ""))[:253],
                "action": str(failover.get("action", ""))[:16],
                "changes": [str(change)[:300] for change in changes[:5]] if isinstance(changes, list) else [],
            }
        budget = summary.get("budget")
        if isinstance(budget, dict) and isinstance(budget.get("slot"), int):
            waited = budget.get("waited")
            run["budget"] = {
                "key": str(budget.get("key", ""))[:253],
                "slot": budget["slot"],
                "waited": round(float(waited), 3) if isinstance(waited, int | float) else 0.0,
            }
        if summary.get("completionTime") and "completionTime" not in run:
            run["completionTime"] = summary["completionTime"]
    elif outcome == "Failed":
        reasons = [c.get("reason", "") for c in status.get("conditions", []) if c.get("type") == "Failed"]
        run["message"] = f"the Job failed ({', '.join(r for r in reasons if r) or 'no reason given'})"
    return run


def newest(jobs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    def created(job: Mapping[str, Any]) -> str:
        return str(job["metadata"].get("creationTimestamp", ""))

    return max(jobs, key=created) if jobs else None


def runs_status(
    jobs: Sequence[Mapping[str, Any]],
    summaries: Mapping[str, Mapping[str, Any]],
    *,
    existing: Mapping[str, Any],
    generation: int,
    now: str,
) -> dict[str, Any]:
    """The run-related part of the status: lastScheduleTime, lastRun, lastSuccessfulTime, the condition."""
    patch: dict[str, Any] = {}
    latest = newest(jobs)
    if latest is None:
        return patch
    patch["lastScheduleTime"] = latest["metadata"].get("creationTimestamp")
    finished = [job for job in jobs if job_outcome(job) != "Running"]
    last = newest(finished)
    if last is None:
        return patch
    run = last_run(last, summaries.get(last["metadata"]["name"]))
    patch["lastRun"] = run
    succeeded = run["result"] == "Succeeded"
    if succeeded:
        patch["lastSuccessfulTime"] = run.get("completionTime") or now
    reason = _success_reason(run) if succeeded else _failure_reason(run)
    message = run.get("message") or f"Job {run['job']} {run['result'].lower()}"
    patch["conditions"] = condition(
        existing.get("conditions", []),
        type_=LAST_RUN_SUCCEEDED,
        status=succeeded,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    return patch


_REASONS = {
    1: "ChecksFailed",
    2: "InvalidJob",
    3: "RoleMismatch",
    4: "LockNotAcquired",
    5: "LockLost",
    6: "Failover",
    7: "GateFailed",
    130: "Interrupted",
    143: "Terminated",
}


def _success_reason(run: Mapping[str, Any]) -> str:
    """A run that exited 0: it ran, or its gates kept it from starting (``gated``)."""
    return "RunGated" if run.get("outcome") == "gated" else "RunSucceeded"


def event_of(run: Mapping[str, Any]) -> tuple[bool, str, str]:
    """The Event for a finished run: (normal?, reason, message), saying when it was gated, retried or
    stopped by a failover."""
    text = str(run.get("message") or f"Job {run['job']} {str(run['result']).lower()}")
    if run.get("retries"):
        text += f" ({run['retries']} retr{'y' if run['retries'] == 1 else 'ies'})"
    if run["result"] == "Succeeded":
        return True, _success_reason(run), text
    if run.get("outcome") == "failover":
        return False, "FailoverDetected", text
    return False, "RunFailed", text


def _failure_reason(run: Mapping[str, Any]) -> str:
    code = run.get("exitCode")
    return _REASONS.get(code, "RunFailed") if isinstance(code, int) else "RunFailed"
