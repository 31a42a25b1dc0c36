from __future__ import annotations

import pytest

from pgquartz.runner.conditions import expectations
from pgquartz.runner.model import Check
from pgquartz.runner.model.results import Captured, CommandResult, CommandState


def result(rc: int, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(
        name="c",
        state=CommandState.SUCCEEDED if rc == 0 else CommandState.FAILED,
        rc=rc,
        stdout=Captured(text=stdout, total_bytes=len(stdout)),
        stderr=Captured(text=stderr, total_bytes=len(stderr)),
    )


def check(**keys: object) -> Check:
    return Check.from_data({"inline": "true", **keys})


def test_rc_is_compared_exactly_unlike_pgquartz_go() -> None:
    # PgQuartz's Go code lets `rc: 1` pass on exit 0; the manual says rc is compared.
    assert expectations.failure(check(rc=1), result(0)) == "exit code 0, expected 1"
    assert expectations.failure(check(rc=1), result(1)) is None
    assert expectations.failure(check(), result(2)) == "exit code 2, expected 0"


@pytest.mark.parametrize(("stdout", "stderr"), [("all SUCCESS\n", ""), ("", "SUCCESS on stderr\n")])
def test_expected_text_may_be_in_stdout_or_stderr(stdout: str, stderr: str) -> None:
    assert expectations.failure(check(expected="SUCCESS"), result(0, stdout, stderr)) is None


def test_missing_expected_text_fails() -> None:
    reason = expectations.failure(check(expected="SUCCESS"), result(0, "FAIL\n"))
    assert reason == "expected text 'SUCCESS' not found in stdout or stderr"


@pytest.mark.parametrize(("stdout", "stderr"), [("FAIL\n", ""), ("", "it FAILed\n")])
def test_unexpected_text_anywhere_fails(stdout: str, stderr: str) -> None:
    assert expectations.failure(check(unexpected="FAIL"), result(0, stdout, stderr)) is not None


def test_skipped_checks_pass() -> None:
    skipped = CommandResult(name="c", state=CommandState.SKIPPED, error="role mismatch")
    assert expectations.failure(check(rc=3), skipped) is None
