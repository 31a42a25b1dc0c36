"""PgQuartz's Go-template rules evaluate as Go's text/template would."""

from __future__ import annotations

import pytest

from pgquartz.runner.conditions import rules
from pgquartz.runner.conditions.views import StepSnapshot
from pgquartz.runner.model.results import Captured, CommandResult, CommandState, InstanceResult, StepState


def instance(step: str, rc: int = 0, stdout: str = "", stderr: str = "", **args: str) -> InstanceResult:
    state = CommandState.SUCCEEDED if rc == 0 else CommandState.FAILED
    command = CommandResult(
        name="c",
        state=state,
        rc=rc,
        stdout=Captured(text=stdout, total_bytes=len(stdout)),
        stderr=Captured(text=stderr, total_bytes=len(stderr)),
    )
    return InstanceResult(step=step, args=args, commands=(command,))


SNAPSHOT = {
    "step 1": StepSnapshot(StepState.DONE, (instance("step 1", rc=0, stdout="ok\n"),)),
    "step 2": StepSnapshot(
        StepState.DONE,
        (
            instance("step 2", stdout="{oid}={13694}\n{datname}={mydb}\n", n="1"),
            instance("step 2", rc=2, stdout="other\n", stderr="warning: x\n", n="2"),
        ),
    ),
    "skipped": StepSnapshot(StepState.SKIPPED),
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('eq .Steps["step 1"].Instances.Rc 0', True),
        ('eq .Steps["step 2"].Instances.Rc 0', False),
        ('eq .Steps["step 2"].Instances.Rc 2', True),  # summed over instances
        ('eq .Steps["step 2"].Rc 2', True),
        ('.Steps["step 2"].Instances.StdOut.Contains "{oid}={13694}"', True),
        ('.Steps.["step 2"].Instances.StdOut.Contains "{oid}={13694}"', True),  # the manual's typo
        ('.Steps["step 2"].Instances.StdOut.Contains "{oid}={1}"', False),
        ('.Steps["step 2"].Instances.StdOut.ContainsLine "other"', True),
        ('.Steps["step 2"].Instances.StdOut.ContainsLine "othe"', False),
        ('.Steps["step 2"].Instances.StdOut.RegExpContains "^\\\\{datname\\\\}=\\\\{my"', True),
        ('.Steps["step 2"].Instances.StdErr.Contains "warning"', True),
        ('eq (index .Steps "step 1").Instances.Rc 0', True),
        ('(index .Steps "step 2").Instances.StdOut.Contains "{datname}={mydb}"', True),
        ('{{ if eq .Steps["step 1"].Rc 0 }}True{{ end }}', True),
        ('{{ if ne .Steps["step 1"].Rc 0 }}True{{ else }}False{{ end }}', False),
        ('{{if eq .Steps["step 2"].Rc 1}}no{{else if eq .Steps["step 2"].Rc 2}}True{{end}}', True),
        ('{{- if eq .Steps["step 1"].Rc 0 -}} True {{- end }}', True),
        ('and (eq .Steps["step 1"].Rc 0) (gt .Steps["step 2"].Rc 1)', True),
        ('or (eq .Steps["step 1"].Rc 1) (eq .Steps["step 2"].Rc 1)', False),
        ('not (eq .Steps["step 1"].Rc 0)', False),
        ('lt .Steps["step 1"].Rc 1', True),
        ('ge .Steps["step 2"].Rc 3', False),
        ('eq .Steps["step 2"].Rc 1 2 3', True),  # Go's eq with several candidates
        ('eq .Steps["skipped"].Rc 0', True),  # a skipped step reads as Rc 0
        ('eq .Steps["skipped"].State "Skipped"', True),
        ('.Steps["skipped"].Instances.StdOut.Contains ""', False),  # no lines at all
        ('.Steps["step 1"].StdOut.Contains "ok" | not', False),
    ],
)
def test_rule_outcome(rule: str, expected: bool) -> None:
    assert rules.compile_rule(rule).holds(SNAPSHOT) is expected


@pytest.mark.parametrize(
    ("rule", "reads"),
    [
        ('eq .Steps["step 1"].Instances.Rc 0', {"step 1"}),
        ('and (eq (index .Steps "a").Rc 0) (.Steps["b"].StdOut.Contains "x")', {"a", "b"}),
        ('{{ if eq .Steps["c"].Rc 0 }}True{{ end }}', {"c"}),
    ],
)
def test_rules_know_which_steps_they_read(rule: str, reads: set[str]) -> None:
    assert rules.compile_rule(rule).reads == reads


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('eq .Steps["a"].Rc', None),  # parses; fails only at evaluation
        ('eq (.Steps["a"].Rc 0', "ends too early"),
        ('foo .Steps["a"].Rc 0', "unknown function 'foo'"),
        ("eq .Steps[name].Rc 0", "unknown function 'name'"),
        ('eq .Nodes["a"].Rc 0', "unknown field .Nodes"),
        ("eq (index .Steps .Steps).Rc 0", "must be a quoted string"),
        ('{{ if eq .Steps["a"].Rc 0 }}True', "has no {{end}}"),
        ("{{ range .Steps }}{{ end }}", "not supported"),
        ('eq .Steps["a"].Rc 0 }}', "unexpected '}'"),
    ],
)
def test_bad_rules_fail_at_load_time(rule: str, message: str | None) -> None:
    if message is None:
        rules.compile_rule(rule)
        return
    with pytest.raises(rules.RuleSyntaxError, match=message.replace("(", r"\(").replace("{", r"\{")):
        rules.compile_rule(rule)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('eq .Steps["step 1"].Rc', "eq takes at least 2"),
        ('eq .Steps["step 1"].Rc "0"', "can't compare a number with a string"),
        ('.Steps["step 1"].StdOut.RegExpContains "("', "invalid regular expression"),
        ('.Steps["step 1"].StdOut.Explode "x"', "has no method Explode"),
        ('eq .Steps["step 1"].Nope 0', "unknown field Nope"),
    ],
)
def test_evaluation_errors_are_rule_errors_not_crashes(rule: str, message: str) -> None:
    with pytest.raises(rules.RuleError, match=message):
        rules.compile_rule(rule).holds(SNAPSHOT)


def test_go_rules_are_recognised_by_their_syntax() -> None:
    assert rules.compile_rule('eq .Steps["a"].Rc 0').syntax is rules.Syntax.GO_TEMPLATE
    assert rules.compile_rule("eq 1 1").syntax is rules.Syntax.GO_TEMPLATE
    assert rules.compile_rule('steps["a"].rc == 0').syntax is rules.Syntax.JINJA
    assert rules.compile_rule('not steps["a"].failed').syntax is rules.Syntax.JINJA
