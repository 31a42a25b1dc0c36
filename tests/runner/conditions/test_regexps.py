"""Rules' regular expressions are RE2's, as Go's (PgQuartz's) are: its syntax, and time linear in the text."""

from __future__ import annotations

import pathlib

import pytest

from pgquartz.runner.conditions import regexps
from tests.conftest import dedent, run_pgquartz


@pytest.mark.parametrize(
    ("pattern", "line", "found"),
    [
        (r"^\{datname\}=\{my", "{datname}={mydb}", True),
        (r"\d+ rows?\b", "vacuumed 12 rows here", True),
        (r"(?i)^error", "ERROR: x", True),
        (r"(?P<n>[0-9]+)", "no digits", False),
        (r"\pL+", "é", True),  # Unicode classes, as Go has them
    ],
)
def test_patterns_in_gos_syntax_are_searched_line_by_line(pattern: str, line: str, found: bool) -> None:
    assert regexps.any_line_matches(pattern, ["first line", line]) is found


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<!x)y", "("])
def test_what_go_refuses_is_refused_with_a_readable_reason_and_nothing_on_stderr(
    pattern: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # Python's re would take the first three (a backreference, lookahead, lookbehind); Go's regexp won't
    with pytest.raises(regexps.InvalidPattern) as refused:
        regexps.compile_pattern(pattern)
    assert str(refused.value) and not str(refused.value).startswith("b'")
    assert capfd.readouterr().err == ""


def test_a_pattern_that_backtracks_for_ever_in_python_ends_a_timed_out_job_in_time(
    tmp_path: pathlib.Path,
) -> None:
    # ^(a|aa)+$ over 200 kB of "a" and one "b": exponential for a backtracking engine (Python's
    # re had the runner still busy 30 s after a 5 s timeout); linear for RE2
    (tmp_path / "job.yml").write_text(
        dedent("""
        git: {disable: true}
        timeout: 5s
        steps:
          output:
            commands: [{inline: "head -c 200000 /dev/zero | tr '\\\\0' a; echo b"}]
          gated:
            when: ['.Steps["output"].StdOut.RegExpContains "^(a|aa)+$"']
            commands: [{inline: "touch gated-ran"}]
          jinja:
            when: ['steps["output"].stdout.matches("^(a|aa)+$") or steps["output"].stdout.matches("a+b$")']
            commands: [{inline: "touch jinja-ran"}]
        """)
    )
    done = run_pgquartz("-c", "job.yml", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "gated-ran").exists()  # no line is only "a"s
    assert (tmp_path / "jinja-ran").exists()  # the rule was evaluated to its end: the second search matched
