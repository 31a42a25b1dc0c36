import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgquartz.runner.model import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("75s", 75),
        ("1m30s", 90),
        ("1h", 3600),
        ("2h45m", 9900),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("100h", 360000),
        ("90", 90),
        ("0.5", 0.5),
        (" 10s ", 10),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert durations.parse(text).total_seconds() == pytest.approx(seconds)


def test_numbers_are_seconds() -> None:
    assert durations.parse(45) == datetime.timedelta(seconds=45)


@pytest.mark.parametrize("text", ["", "1d", "s", "10 s", "1h-5m", "-5s", "abc", "1h1"])
def test_invalid_durations_are_rejected_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        durations.parse(text)


def test_booleans_are_not_durations() -> None:
    with pytest.raises(ValueError):
        durations.parse(True)


@given(st.integers(min_value=0, max_value=10**7))
def test_format_round_trips_through_parse(milliseconds: int) -> None:
    value = datetime.timedelta(milliseconds=milliseconds)
    assert durations.parse(durations.format(value)) == value


def test_format_reads_like_pgquartz() -> None:
    assert durations.format(datetime.timedelta(seconds=90)) == "1m30s"
    assert durations.format(datetime.timedelta(hours=1)) == "1h"
    assert durations.format(datetime.timedelta(0)) == "0s"
