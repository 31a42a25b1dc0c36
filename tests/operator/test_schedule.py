"""Schedules and time zones: what the API server would refuse is caught before anything is written."""

from __future__ import annotations

import re

import pytest

from pgquartz.operator import schedule


@pytest.mark.parametrize(
    "text",
    [
        "15 23 * * *",
        "*/5 * * * *",
        "0 0 1 jan-mar mon",
        "0 4 * * MON-FRI",
        "5/15 * * * *",
        "0 0 ? * sun",
        "0,30 1-5 1,15 * 0-6/2",
        "@daily",
        "@midnight",
        "@yearly",
        "@every 1h30m",
        "  15 23 * * *  ",
    ],
)
def test_schedules_the_cron_job_controller_accepts_pass(text: str) -> None:
    assert schedule.schedule_problem(text) is None
    assert re.match(schedule.SHAPE, text)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("* * * *", "has 4 fields"),
        ("0 0 * * * *", "has 6 fields"),
        ("61 * * * *", "minute field: '61' is above 59"),
        ("0 24 * * *", "hour field: '24' is above 23"),
        ("0 0 0 * *", "day of month field: '0' is below 1"),
        ("0 0 * 13 *", "month field: '13' is above 12"),
        ("0 0 * * 7", "day of week field: '7' is above 6"),
        ("0 0 * * funday", "'funday' is not a number or a name"),
        ("3-1 * * * *", "starts after it ends"),
        ("*/0 * * * *", "the step must be a positive number"),
        ("1/2/3 * * * *", "more than one '/'"),
        ("1-2-3 * * * *", "more than one '-'"),
        ("-1 * * * *", "is not a number"),
        ("TZ=Europe/Amsterdam 0 4 * * *", "use spec.timeZone"),
        ("CRON_TZ=UTC 0 4 * * *", "use spec.timeZone"),
        ("@fortnightly", "unknown descriptor"),
        ("@every 30", "needs a unit"),
        ("@every 0s", "must be positive"),
        ("@every soon", "@every soon"),
        ("   ", "empty"),
    ],
)
def test_schedules_the_api_server_would_refuse_are_explained(text: str, complaint: str) -> None:
    problem = schedule.schedule_problem(text)
    assert problem is not None
    assert complaint in problem


def test_the_crd_shape_rejects_a_wrong_number_of_fields() -> None:
    assert not re.match(schedule.SHAPE, "* * * *")
    assert not re.match(schedule.SHAPE, "0 0 * * * *")


@pytest.mark.parametrize("name", ["Europe/Amsterdam", "Etc/UTC", "America/New_York"])
def test_iana_time_zones_pass(name: str) -> None:
    assert schedule.time_zone_problem(name) is None


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("Mars/Olympus_Mons", "unknown time zone"),
        ("Local", "not Local"),
        ("", "not a time zone name"),
        (" Etc/UTC", "not a time zone name"),
        ("../../etc/passwd", "unknown time zone"),
    ],
)
def test_time_zones_the_api_server_would_refuse_are_explained(name: str, complaint: str) -> None:
    problem = schedule.time_zone_problem(name)
    assert problem is not None
    assert complaint in problem
