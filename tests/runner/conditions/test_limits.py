"""Rules cost little to compile and to evaluate, whoever writes them (issue 10 §6 and §8)."""

from __future__ import annotations

import resource

import pytest

from pgquartz.runner.conditions import rules
from tests.runner.conditions.test_gotemplate import SNAPSHOT

HOSTILE_AT_LOAD_TIME = [
    ('"x" * 800000000 == steps["step 1"].stdout', "works on numbers"),
    ('steps["step 1"].rc == 99999999 ** 99999999', "limited to 4096 bits"),
    ('steps["step 1"].rc == "%999999999d" % 1', "works on numbers"),
    ('steps["step 1"].rc == [1] * 999999999', "works on numbers"),
    ('"x"|center(999999999) == steps["step 1"].stdout', "No filter named 'center'"),
    ('"x"|join == steps["step 1"].stdout', "No filter named 'join'"),
    ("(" * 5000 + 'steps["step 1"].rc' + ")" * 5000, "at most 4096 characters"),
    ("(" * 40 + 'steps["step 1"].rc' + ")" * 40, "nest more than 32 deep"),
    ("{{if " * 3000 + ".Steps" + "}}True{{end}}" * 3000, "at most 4096 characters"),
    ("{{if eq 1 1}}" * 40 + "True" + "{{end}}" * 40, "at most 32 {{if}} blocks"),
    ("eq (" * 40 + ".Steps" + ")" * 40, "nest more than 32 deep"),
]


@pytest.mark.parametrize(("rule", "message"), HOSTILE_AT_LOAD_TIME)
def test_hostile_rules_are_refused_when_compiled(rule: str, message: str) -> None:
    with pytest.raises(rules.RuleSyntaxError, match=message):
        rules.compile_rule(rule)


HOSTILE_AT_RUN_TIME = [
    ('steps["step 2"].stdout * 800000000 == "x"', "works on numbers in rules, not on Output"),
    ('steps["step 1"].rc + 99999999 ** (steps["step 2"].rc * 99999999) == 1', "limited to 4096 bits"),
    ('"x".ljust(steps["step 2"].rc * 999999999) == "x"', "ljust"),
    ('"{:>999999999}".format(1) == "x"', "format"),
]


@pytest.mark.parametrize(("rule", "message"), HOSTILE_AT_RUN_TIME)
def test_what_only_evaluation_reveals_fails_the_rule_at_once(rule: str, message: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = rules.compile_rule(rule)
    with pytest.raises(rules.RuleError, match=message):
        compiled.holds(SNAPSHOT)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024  # nothing of the sizes asked for was built


@pytest.mark.parametrize(
    "rule",
    [
        'steps["step 1"].rc == 2 ** 10 - 1024',
        'steps["step 2"].rc * 2 == 4 and steps["step 2"].rc // 2 == 1 and -steps["step 1"].rc == 0',
        '"{oid}" + "={13694}" in steps["step 2"].stdout',
        'steps["step 2"].stdout.text.lower().startswith("{oid}")',
        'steps["step 1"].rc == 0 and ((steps["step 2"].rc > 1))',
    ],
)
def test_ordinary_arithmetic_and_text_still_work(rule: str) -> None:
    assert rules.compile_rule(rule).holds(SNAPSHOT) is True
