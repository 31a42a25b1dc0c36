from __future__ import annotations

import pytest

from pgquartz.runner.conditions import rules
from tests.runner.conditions.test_gotemplate import SNAPSHOT


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('steps["step 1"].rc == 0', True),
        ('steps["step 2"].rc == 2', True),
        ('"{oid}={13694}" in steps["step 2"].stdout', True),
        ('steps["step 2"].stdout.contains("{datname}={mydb}")', True),
        ('steps["step 2"].stdout.contains_line("other")', True),
        ('steps["step 2"].stdout.matches("^\\\\{oid\\\\}")', True),
        ('"warning" in steps["step 2"].stderr', True),
        ('steps["skipped"].skipped and steps["skipped"].rc == 0', True),
        ('steps["step 2"].failed', True),
        ('steps["step 2"].instances | selectattr("failed") | list | length == 1', True),
        ('steps["step 2"].instances[1].args.n == "2"', True),
        ('steps["step 1"].state == "Done"', True),
    ],
)
def test_jinja_rule_outcome(rule: str, expected: bool) -> None:
    assert rules.compile_rule(rule).holds(SNAPSHOT) is expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("steps[", "not a valid expression"),
        ('other["a"].rc == 0', "unknown name 'other'"),
        ("steps[name].rc", "must be a quoted string"),
        ("steps | length", "must be followed by a step name"),
    ],
)
def test_bad_jinja_rules_fail_at_load_time(rule: str, message: str) -> None:
    with pytest.raises(rules.RuleSyntaxError, match=message):
        rules.compile_rule(rule)


@pytest.mark.parametrize(
    "rule",
    [
        'steps["step 1"].__class__.__mro__',
        'steps["step 1"].stdout.__init__.__globals__',
        'steps["step 1"].rc.__class__.__subclasses__()',
    ],
)
def test_the_sandbox_refuses_to_reach_python_internals(rule: str) -> None:
    with pytest.raises(rules.RuleError):
        rules.compile_rule(rule).holds(SNAPSHOT)
