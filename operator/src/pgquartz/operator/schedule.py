"""Cron schedules and time zones as the Kubernetes API server accepts them for a CronJob.

The API server rejects a CronJob whose schedule or time zone it cannot parse;
the operator checks first, so a bad ``spec.schedule`` becomes a ``Ready=False``
condition naming the problem instead of a failed write retried forever. The
rules follow the parser the CronJob controller uses (robfig/cron's standard
parser): five fields (minute, hour, day of month, month, day of week) of
comma-separated ``*``/``?``, ``N``, ``N-M`` and ``/step`` items, month and
weekday names, the ``@hourly`` … ``@yearly`` descriptors and ``@every
<duration>``; ``TZ=``/``CRON_TZ=`` inside the schedule is refused (the
``timeZone`` field is for that).
"""

from __future__ import annotations

import dataclasses
import zoneinfo

from pgquartz.runner.model import durations


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    def value(self, text: str) -> int:
        lowered = text.lower()
        if lowered in self.names:
            return self.names.index(lowered) + self.low
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a number" + (" or a name" if self.names else ""))
        return int(text)


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _WEEKDAYS),
)
#: What the CRD's schema checks (the shape only: five fields or a descriptor); the rest is checked here.
SHAPE = r"^\s*(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|@every\s+\S+|\S+(\s+\S+){4})\s*$"
DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def _check_item(item: str, field: _Field) -> None:
    range_and_step = item.split("/")
    if len(range_and_step) > 2:
        raise ValueError(f"{item!r} has more than one '/'")
    bounds = range_and_step[0].split("-")
    if len(bounds) > 2:
        raise ValueError(f"{item!r} has more than one '-'")
    if bounds[0] in ("*", "?"):
        if len(bounds) > 1:
            raise ValueError(f"{item!r}: a range cannot start with {bounds[0]!r}")
        start, end = field.low, field.high
    else:
        start = field.value(bounds[0])
        end = field.value(bounds[1]) if len(bounds) == 2 else start
    if len(range_and_step) == 2:
        step_text = range_and_step[1]
        if not step_text.isdigit() or int(step_text) == 0:
            raise ValueError(f"{item!r}: the step must be a positive number")
        if len(bounds) == 1:
            end = field.high  # "N/step" means N to the end, every step
    if start < field.low:
        raise ValueError(f"{item!r} is below {field.low}")
    if end > field.high:
        raise ValueError(f"{item!r} is above {field.high}")
    if start > end:
        raise ValueError(f"{item!r} starts after it ends")


def schedule_problem(schedule: str) -> str | None:
    """Why the API server would refuse ``schedule``, or None if it is valid."""
    text = schedule.strip()
    if not text:
        return "the schedule is empty"
    if "TZ" in text:
        return "TZ= and CRON_TZ= cannot be part of the schedule: use spec.timeZone"
    if text.startswith("@"):
        if text.startswith("@every "):
            interval = text.removeprefix("@every ").strip()
            if interval.replace(".", "", 1).isdigit():
                return f"{text!r}: the interval needs a unit, e.g. '@every 90m'"
            try:
                every = durations.parse(interval)
            except ValueError as error:
                return f"{text!r}: {error}"
            return None if every.total_seconds() > 0 else f"{text!r}: the interval must be positive"
        return None if text in DESCRIPTORS else f"unknown descriptor {text!r}"
    parts = text.split()
    if len(parts) != len(FIELDS):
        return (
            f"{text!r} has {len(parts)} fields; a schedule has 5 "
            "(minute hour day-of-month month day-of-week), e.g. '15 23 * * *'"
        )
    for part, field in zip(parts, FIELDS, strict=True):
        for item in part.split(","):
            try:
                _check_item(item, field)
            except ValueError as error:
                return f"{field.name} field: {error} (allowed {field.low}-{field.high})"
    return None


def time_zone_problem(name: str) -> str | None:
    """Why ``name`` is not a time zone the API server accepts, or None if it is one."""
    if not name or name.strip() != name:
        return f"{name!r} is not a time zone name"
    if name.lower() == "local":
        return "timeZone must name a zone explicitly (e.g. Europe/Amsterdam), not Local"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (expected an IANA name such as Europe/Amsterdam or Etc/UTC)"
    return None
