"""Durations written as PgQuartz writes them.

PgQuartz reads ``timeout`` and ``lockTimeout`` with Go's ``time.ParseDuration``,
so job files hold strings like ``75s``, ``1m30s``, ``1h`` or ``250ms``. This
module parses that syntax (and a bare number, read as seconds) into a
:class:`Duration` (a :class:`datetime.timedelta`), and writes one back in the same
syntax so a round-tripped job file, and the defaults the JSON Schema shows, stay
readable.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pydantic
from pydantic_core import core_schema

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*$|^\s*((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+\s*$"


def parse(value: Any) -> Duration:
    """Read a Go-style duration (``1h30m``) or a number of seconds.

    Raises :class:`ValueError` with a message fit to show a user.
    """
    if not isinstance(value, str | int | float | datetime.timedelta):
        raise ValueError(f"expected a duration like '75s' or '1h30m', got {type(value).__name__}")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"expected a duration like '75s' or '1h30m', got {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            raise ValueError("expected a duration like '75s' or '1h30m', got an empty string")
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_units(text)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return Duration(seconds=seconds)


def _parse_units(text: str) -> float:
    position = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(
            f"expected a duration like '75s', '1m30s' or '1h' (units: h, m, s, ms, us, ns), got {text!r}"
        )
    return total


def format(value: datetime.timedelta) -> str:
    """Write a duration the way PgQuartz users write it: ``1h30m``, ``75s``, ``250ms``."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds:
        parts.append(f"{seconds}s")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": PATTERN,
    "description": "A duration as Go writes it (75s, 1m30s, 1h, 250ms) or a number of seconds.",
}


class Duration(datetime.timedelta):
    """A model field type: a duration in PgQuartz's syntax, a timedelta, written back in that syntax
    (by pydantic too, defaults in a JSON Schema included: they are serialised by their own type)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: pydantic.GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                format, return_schema=core_schema.str_schema()
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: pydantic.GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return dict(SCHEMA)
