"""Jobs and runner summaries → status: conditions in metav1 shape, last run details, times."""

from __future__ import annotations

import json
from typing import Any

from pgquartz.operator import status


def job(name: str, created: str, outcome: str | None, **extra: Any) -> dict[str, Any]:
    conditions = (
        [] if outcome is None else [{"type": outcome, "status": "True", "reason": "BackoffLimitExceeded"}]
    )
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"conditions": conditions, "startTime": created, **extra},
    }


def test_a_condition_keeps_its_transition_time_until_its_status_flips() -> None:
    first = status.condition(
        [], type_="Ready", status=True, reason="ObjectsInPlace", message="ok", generation=1, now="T1"
    )
    same = status.condition(
        first, type_="Ready", status=True, reason="ObjectsInPlace", message="ok again", generation=2, now="T2"
    )
    flipped = status.condition(
        same, type_="Ready", status=False, reason="InvalidSchedule", message="bad", generation=3, now="T3"
    )
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["observedGeneration"] == 2
    assert flipped == [
        {
            "type": "Ready",
            "status": "False",
            "observedGeneration": 3,
            "lastTransitionTime": "T3",
            "reason": "InvalidSchedule",
            "message": "bad",
        }
    ]


def test_the_newest_finished_run_decides_last_run_succeeded() -> None:
    jobs = [
        job("nightly-1", "2026-11-21T23:15:00Z", "Complete", completionTime="2026-11-21T23:16:00Z"),
        job("nightly-2", "2026-11-22T23:15:00Z", "Failed"),
        job("nightly-3", "2026-11-23T23:15:00Z", None),  # still running
    ]
    summary = {
        "exitCode": 1,
        "result": "check-failed",
        "failedSteps": ["vacuum"],
        "message": "check failed: x",
    }
    patch = status.runs_status(jobs, {"nightly-2": summary}, existing={}, generation=4, now="NOW")
    assert patch["lastScheduleTime"] == "2026-11-23T23:15:00Z"
    assert patch["lastRun"] == {
        "job": "nightly-2",
        "result": "Failed",
        "startTime": "2026-11-22T23:15:00Z",
        "exitCode": 1,
        "failedSteps": ["vacuum"],
        "message": "check failed: x",
        "outcome": "check-failed",
    }
    [cond] = patch["conditions"]
    assert (
        cond["type"] == "LastRunSucceeded" and cond["status"] == "False" and cond["reason"] == "ChecksFailed"
    )
    assert "lastSuccessfulTime" not in patch


def test_a_successful_run_sets_last_successful_time() -> None:
    jobs = [job("nightly-1", "2026-11-21T23:15:00Z", "Complete", completionTime="2026-11-21T23:16:00Z")]
    patch = status.runs_status(jobs, {}, existing={}, generation=1, now="NOW")
    assert patch["lastSuccessfulTime"] == "2026-11-21T23:16:00Z"
    assert patch["conditions"][0]["reason"] == "RunSucceeded" and patch["conditions"][0]["status"] == "True"


def test_exit_codes_become_reasons() -> None:
    jobs = [job("n-1", "2026-11-21T23:15:00Z", "Failed")]
    for code, reason in (
        (2, "InvalidJob"),
        (3, "RoleMismatch"),
        (4, "LockNotAcquired"),
        (5, "LockLost"),
        (6, "Failover"),
        (7, "GateFailed"),
    ):
        patch = status.runs_status(jobs, {"n-1": {"exitCode": code}}, existing={}, generation=1, now="NOW")
        assert patch["conditions"][0]["reason"] == reason


def test_a_failed_job_without_a_summary_still_explains_itself() -> None:
    patch = status.runs_status([job("n-1", "T", "Failed")], {}, existing={}, generation=1, now="NOW")
    assert patch["lastRun"]["message"] == "the Job failed (BackoffLimitExceeded)"
    assert patch["conditions"][0]["reason"] == "RunFailed"


def test_runner_summaries_are_read_from_termination_messages() -> None:
    text = json.dumps({"job": "n", "result": "succeeded", "exitCode": 0, "failedSteps": []})
    assert status.run_summary(text) == json.loads(text)
    assert status.run_summary("panic: something else") is None
    assert status.run_summary("") is None
    assert status.run_summary('{"no": "exit code"}') is None


def test_no_jobs_means_nothing_to_report() -> None:
    assert status.runs_status([], {}, existing={}, generation=1, now="NOW") == {}


def test_a_gated_run_succeeded_and_says_why_it_did_not_start() -> None:
    jobs = [job("n-1", "2026-11-21T23:15:00Z", "Complete", completionTime="2026-11-21T23:16:00Z")]
    summary = {
        "exitCode": 0,
        "result": "gated",
        "message": "gated after waiting 600.0s: replication lag 80.0MB is over 64MB; nothing ran",
        "gated": ["replication lag 80.0MB is over 64MB: pg-b: 80 MB behind"],
    }
    patch = status.runs_status(jobs, {"n-1": summary}, existing={}, generation=1, now="NOW")
    run = patch["lastRun"]
    assert run["result"] == "Succeeded" and run["outcome"] == "gated"
    assert run["gated"] == ["replication lag 80.0MB is over 64MB: pg-b: 80 MB behind"]
    [cond] = patch["conditions"]
    assert cond["status"] == "True" and cond["reason"] == "RunGated"
    assert status.event_of(run) == (True, "RunGated", summary["message"])


def test_a_run_stopped_by_a_failover_is_a_warning_naming_what_changed() -> None:
    jobs = [job("n-1", "2026-11-21T23:15:00Z", "Failed")]
    summary = {
        "exitCode": 6,
        "result": "failover",
        "message": "connection 'pg' reaches another server …",
        "retries": 2,
        "failover": {
            "connection": "pg",
            "action": "abort",
            "changes": ["timeline 1 → 2 (a promotion happened)"],
            "before": {"timeline": 1},
            "after": {"timeline": 2},
        },
    }
    patch = status.runs_status(jobs, {"n-1": summary}, existing={}, generation=1, now="NOW")
    run = patch["lastRun"]
    assert run["failover"] == {
        "connection": "pg",
        "action": "abort",
        "changes": ["timeline 1 → 2 (a promotion happened)"],
    }
    assert run["retries"] == 2 and patch["conditions"][0]["reason"] == "Failover"
    normal, reason, message = status.event_of(run)
    assert (normal, reason) == (False, "FailoverDetected") and message.endswith("(2 retries)")


def test_hostile_summary_fields_are_bounded() -> None:
    summary = {"exitCode": 0, "result": "x" * 500, "gated": ["y" * 5000] * 50, "failover": {"changes": "zz"}}
    run = status.last_run(job("n-1", "T", "Complete"), summary)
    assert len(run["outcome"]) == 64 and len(run["gated"]) == 5 and len(run["gated"][0]) == 300
    assert run["failover"]["changes"] == []


def test_the_budget_slot_a_run_held_and_its_wait_reach_last_run_bounded() -> None:
    jobs = [job("n-1", "2026-11-21T23:15:00Z", "Complete", completionTime="2026-11-21T23:16:00Z")]
    summary = {
        "exitCode": 0,
        "result": "succeeded",
        "message": "all checks passed",
        "budget": {"key": "db/cluster-7301" + "x" * 500, "slot": 2, "waited": 12.34567},
    }
    run = status.runs_status(jobs, {"n-1": summary}, existing={}, generation=1, now="NOW")["lastRun"]
    assert run["budget"] == {"key": ("db/cluster-7301" + "x" * 500)[:253], "slot": 2, "waited": 12.346}
    summary["budget"] = {"key": "k", "slot": "two"}  # not what a runner writes: left out
    run = status.runs_status(jobs, {"n-1": summary}, existing={}, generation=1, now="NOW")["lastRun"]
    assert "budget" not in run
