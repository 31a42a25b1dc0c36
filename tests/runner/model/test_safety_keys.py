"""The new safety keys in the model: retry, onFailover, gates; and PostgreSQL's condition names."""

from __future__ import annotations

import pathlib
import random
import re

import pytest

from pgquartz.runner.model import Job, sqlstates
from pgquartz.runner.model.base import ModelError
from pgquartz.runner.model.gates import Lag, parse_lag
from pgquartz.runner.model.job import OnFailover
from pgquartz.runner.model.retry import Retry
from tests.support.pgcluster import bin_dir


def errcodes() -> dict[str, tuple[str, ...]]:
    """Condition name → SQLSTATEs, read from the errcodes.txt of the PostgreSQL the tests run."""
    found: dict[str, list[str]] = {}
    text = (pathlib.Path(bin_dir()).parent / "share" / "errcodes.txt").read_text()
    for line in text.splitlines():
        match = re.match(r"^([0-9A-Z]{5})\s+E\s+\S+\s+(\S+)\s*$", line)
        if match:
            found.setdefault(match.group(2), []).append(match.group(1))
    return {name: tuple(codes) for name, codes in found.items()}


def test_the_condition_table_is_postgresqls_own() -> None:
    assert errcodes() == sqlstates.CONDITIONS


@pytest.mark.parametrize(
    ("condition", "sqlstate", "retried"),
    [
        ("serialization_failure", "40001", True),
        ("SERIALIZATION_FAILURE", "40001", True),
        ("40001", "40001", True),
        ("40", "40P01", True),
        ("transaction_rollback", "40P01", True),  # 40000 is the class, as in PL/pgSQL
        ("connection_exception", "08006", True),
        ("deadlock_detected", "40001", False),
        ("lock_not_available", "55000", False),
    ],
)
def test_conditions_match_codes_and_classes(condition: str, sqlstate: str, retried: bool) -> None:
    assert Retry(on=[condition]).retries_sqlstate(sqlstate) is retried


def test_a_lost_session_counts_as_connection_failure_only() -> None:
    assert Retry(on=["connection_failure"]).retries_sqlstate(None)
    assert not Retry(on=["admin_shutdown"]).retries_sqlstate(None)


def test_a_misspelt_condition_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ModelError, match="did you mean 'deadlock_detected'"):
        Retry.from_data({"on": ["deadlock_detection"]})


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ({}, "say which errors to retry"),
        ({"exitCodes": [0]}, "cannot mean failure"),
        ({"on": ["40001"], "attempts": 0}, "greater than or equal to 1"),
        ({"on": ["40001"], "attempts": 101}, "less than or equal to 100"),
    ],
)
def test_bad_retries_are_refused(retry: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        Retry.from_data(retry)


def test_yaml_11_turns_on_into_true_and_it_still_means_on() -> None:
    assert Retry.from_data({True: ["40001"]}).on == ["40001"]


def test_delays_grow_exponentially_with_jitter_and_stay_under_the_cap() -> None:
    retry = Retry.from_data({"on": ["40001"], "backoff": "1s", "maxBackoff": "5s"})
    rng = random.Random(7)
    for attempt, step in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (40, 5.0)):
        delays = [retry.delay(attempt, rng) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step
        assert max(delays) - min(delays) > step / 4  # jittered, not a fixed wait


def job(**extra: object) -> Job:
    return Job.from_data({"steps": {"s": {"commands": [{"inline": "true"}]}}, **extra})


def test_shell_commands_retry_on_exit_codes_and_sql_on_conditions() -> None:
    with pytest.raises(ModelError, match=r"use retry\.exitCodes"):
        job(steps={"s": {"commands": [{"inline": "x", "retry": {"on": ["40001"]}}]}})
    with pytest.raises(ModelError, match=r"use retry\.on"):
        job(
            connections={"pg": {}},
            steps={"s": {"commands": [{"type": "pg", "inline": "x", "retry": {"exitCodes": [75]}}]}},
        )
    with pytest.raises(ModelError, match="a connection's retry is for SQL errors"):
        job(connections={"pg": {"retry": {"exitCodes": [75]}}})


def test_a_command_without_retry_takes_its_connections() -> None:
    parsed = job(
        connections={"pg": {"retry": {"on": ["40001"]}}},
        steps={
            "s": {
                "commands": [
                    {"type": "pg", "inline": "a"},
                    {"type": "pg", "inline": "b", "retry": {"on": ["40P01"]}},
                    {"inline": "c"},
                ]
            }
        },
    )
    a, b, c = parsed.steps["s"].commands
    assert parsed.retry_of(a) == Retry(on=["40001"])
    assert parsed.retry_of(b) == Retry(on=["40P01"])
    assert parsed.retry_of(c) is None


@pytest.mark.parametrize(
    ("connection", "policy"),
    [
        ({"role": "primary"}, OnFailover.ABORT),
        ({"role": "standby"}, OnFailover.ABORT),
        ({}, OnFailover.CONTINUE),
        ({"role": "primary", "onFailover": "continue"}, OnFailover.CONTINUE),
        ({"onFailover": "abort"}, OnFailover.ABORT),
    ],
)
def test_on_failover_defaults_follow_the_role(connection: dict[str, str], policy: OnFailover) -> None:
    assert job(connections={"pg": connection}).connections["pg"].failover_policy is policy


@pytest.mark.parametrize(
    ("text", "lag"),
    [
        ("64MB", Lag(bytes=64_000_000, text="64MB")),
        ("16MiB", Lag(bytes=16 * 1024**2, text="16MiB")),
        (1048576, Lag(bytes=1048576, text="1048576")),
        ("30s", Lag(seconds=30.0, text="30s")),
        ("1m", Lag(seconds=60.0, text="1m")),  # m is minutes, as in every duration
    ],
)
def test_replication_lag_is_bytes_or_time(text: str | int, lag: Lag) -> None:
    assert parse_lag(text) == lag


def test_gates_keep_their_order_and_every_gate_is_located() -> None:
    parsed = job(
        connections={"pg": {}},
        gates={"wait": "10m", "require": [{"maxReplicationLag": "1GB"}, {"noBackupRunning": True}]},
        steps={
            "s": {
                "commands": [{"inline": "true"}],
                "gates": {"onTimeout": "fail", "require": [{"type": "pg", "inline": "select 1", "rc": 0}]},
            }
        },
    )
    paths = [path for path, _ in parsed.located_gates()]
    assert paths == [("gates", "require", 0), ("gates", "require", 1), ("steps", "s", "gates", "require", 0)]
    assert parsed.gates is not None and parsed.gates.wait.total_seconds() == 600
    assert parsed.gate_connection(parsed.gates.require[0]) == "pg"
    # the custom gate is checked like any command (its type must name a connection)
    assert (("steps", "s", "gates", "require", 0)) in [path for path, _ in parsed.located_commands()]


def test_a_job_file_without_the_new_keys_is_unchanged() -> None:
    parsed = job(connections={"pg": {"role": "all"}})
    assert parsed.gates is None and parsed.connections["pg"].retry is None
    assert parsed.steps["s"].commands[0].retry is None and parsed.steps["s"].gates is None
