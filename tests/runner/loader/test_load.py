"""The loader reports every problem of a job file, each with file, line and key path."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import pytest

from pgquartz.runner import loader
from pgquartz.runner.model.problems import JobFileError
from tests.conftest import dedent


def problems_of(write_job: Callable[..., pathlib.Path], text: str) -> list[str]:
    with pytest.raises(JobFileError) as caught:
        loader.load(write_job(text))
    return [str(problem) for problem in caught.value.problems]


def test_yaml_syntax_error_names_file_and_line(write_job: Callable[..., pathlib.Path]) -> None:
    [problem] = problems_of(
        write_job,
        """
        steps:
          a:
            commands:
              - inline: "unterminated
        """,
    )
    assert "job.yml:4:" in problem or "job.yml:5:" in problem
    assert "invalid YAML" in problem


def test_manuals_unquoted_rule_is_a_yaml_error_with_a_line(write_job: Callable[..., pathlib.Path]) -> None:
    # PgQuartz's manual writes `- "eq .Steps["step 1"].Instances.Rc 0"`, which is not valid YAML.
    [problem] = problems_of(
        write_job,
        """
        steps:
          a:
            commands: [{inline: "true"}]
            when:
              - "eq .Steps["a"].Instances.Rc 0"
        """,
    )
    assert "job.yml:5:" in problem


def test_unknown_keys_are_errors_with_a_suggestion(write_job: Callable[..., pathlib.Path]) -> None:
    problems = problems_of(
        write_job,
        """
        paralel: 2
        steps:
          a:
            depend: [b]
            commands:
              - inlne: "true"
        """,
    )
    assert any(
        "job.yml:1:1: paralel: unknown key 'paralel' (did you mean 'parallel'?)" in p for p in problems
    )
    assert any("job.yml:4:5:" in p and "'depend' (did you mean 'depends'?)" in p for p in problems)
    assert any("job.yml:6:9:" in p and "'inlne' (did you mean 'inline'?)" in p for p in problems)


def test_all_plan_problems_come_in_one_report(write_job: Callable[..., pathlib.Path]) -> None:
    problems = problems_of(
        write_job,
        """
        steps:
          a:
            commands: [{inline: "true"}]
            depends: [b, nosuch]
          b:
            commands: [{inline: "true"}]
            depends: [a]
          c:
            commands: [{type: pg, inline: select 1}]
            when:
              - eq .Steps["x"].Rc 0
              - "eq (index .Steps  0"
        """,
    )
    text = "\n".join(problems)
    assert "job.yml:4:18: steps.a.depends[1]: unknown step 'nosuch'" in text
    assert "dependency cycle: 'a' → 'b' → 'a'" in text
    assert "job.yml:9:17: steps.c.commands[0].type: type 'pg' is neither 'shell' nor a connection" in text
    assert "job.yml:11:9: steps.c.when[0]: rule reads unknown step 'x'" in text
    assert "job.yml:12:9: steps.c.when[1]: rule " in text and "does not parse" in text
    assert len(problems) == 5


def test_missing_and_non_executable_scripts_are_reported(
    write_job: Callable[..., pathlib.Path], tmp_path: pathlib.Path
) -> None:
    (tmp_path / "plain.sh").write_text("echo hi\n")
    (tmp_path / "query.sql").write_text("select 1\n")
    problems = problems_of(
        write_job,
        """
        connections:
          pg: {conn_params: {host: /tmp}}
        steps:
          a:
            commands:
              - file: missing.sh
              - file: plain.sh
              - {type: pg, file: query.sql}
              - {type: pg, file: missing.sql}
        """,
    )
    text = "\n".join(problems)
    assert "steps.a.commands[0].file:" in text and "missing.sh' does not exist" in text
    assert "steps.a.commands[1].file:" in text and "is not executable (chmod +x it)" in text
    assert "commands[2]" not in text  # an SQL file only has to be readable
    assert "missing.sql' does not exist" in text


def test_duplicate_keys_are_errors(write_job: Callable[..., pathlib.Path]) -> None:
    [problem] = problems_of(
        write_job,
        """
        steps:
          a:
            commands: [{inline: "true"}]
          a:
            commands: [{inline: "false"}]
        """,
    )
    assert "job.yml:4:3:" in problem and "duplicate key 'a'" in problem


def test_wrong_types_and_durations_are_explained(write_job: Callable[..., pathlib.Path]) -> None:
    problems = problems_of(
        write_job,
        """
        timeout: soon
        parallel: many
        steps:
          a:
            commands: [{inline: "true"}]
        """,
    )
    text = "\n".join(problems)
    assert "job.yml:1:1: timeout: expected a duration like '75s'" in text
    assert "job.yml:2:1: parallel: input should be a valid integer" in text and "got 'many'" in text


def test_empty_file_and_missing_steps(write_job: Callable[..., pathlib.Path]) -> None:
    assert "it is empty" in problems_of(write_job, "")[0]
    assert "missing required key 'steps'" in problems_of(write_job, "parallel: 1\n")[0]


def test_missing_job_file_is_a_problem(tmp_path: pathlib.Path) -> None:
    with pytest.raises(JobFileError, match="job file not found"):
        loader.load(tmp_path / "nope.yml")


def test_workdir_defaults_to_the_job_files_directory(
    load_job: Callable[..., loader.LoadedJob], tmp_path: pathlib.Path
) -> None:
    loaded = load_job("steps: {a: {commands: [{inline: 'true'}]}}\n", name="nightly.yaml")
    assert loaded.workdir == tmp_path.resolve()
    assert loaded.name == "nightly"


def test_relative_workdir_and_files_resolve_from_the_job_file(
    write_job: Callable[..., pathlib.Path], tmp_path: pathlib.Path
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = scripts / "run.sh"
    script.write_text("echo ok\n")
    os.chmod(script, 0o755)
    path = write_job("""
        workdir: scripts
        steps:
          a:
            commands: [{file: run.sh}]
        """)
    loaded = loader.load(path)
    assert loaded.workdir == scripts.resolve()
    assert loaded.script_path(loaded.job.steps["a"].commands[0]) == script.resolve()


def test_steps_keep_file_order_and_names_as_written(load_job: Callable[..., loader.LoadedJob]) -> None:
    loaded = load_job(
        dedent("""
        steps:
          zeta: {commands: [{inline: "true"}]}
          1: {commands: [{inline: "true"}]}
          alpha: {commands: [{inline: "true"}]}
        """)
    )
    assert list(loaded.job.steps) == ["zeta", "1", "alpha"]


def test_yaml_anchors_and_merge_keys_work(load_job: Callable[..., loader.LoadedJob]) -> None:
    loaded = load_job(
        dedent("""
        steps:
          a: &base
            commands: [{inline: "echo a"}]
            matrix: {n: [1, 2]}
          b:
            <<: *base
            depends: [a]
        """)
    )
    assert loaded.job.steps["b"].matrix == {"n": ["1", "2"]}
    assert loaded.plan.steps["b"].depends == ("a",)


def test_connection_parameters_must_be_libpq_keywords(write_job: Callable[..., pathlib.Path]) -> None:
    problems = problems_of(
        write_job,
        """
        connections:
          pg:
            conn_params: {hots: /tmp, port: 5432, dbname: app, target_session_attrs: read-write}
        steps:
          a: {commands: [{type: pg, inline: select 1}]}
        """,
    )
    assert len(problems) == 1
    assert "job.yml:3:19: connections.pg.conn_params.hots: 'hots' is not a libpq" in problems[0]
    assert "(did you mean 'host'?)" in problems[0]


def test_one_password_source_per_connection(write_job: Callable[..., pathlib.Path]) -> None:
    [problem] = problems_of(
        write_job,
        """
        connections:
          pg:
            conn_params: {host: /tmp, password: secret}
            passwordEnv: PGPASS
        steps:
          a: {commands: [{type: pg, inline: select 1}]}
        """,
    )
    assert "give the password one way, not conn_params.password and passwordEnv" in problem
    assert "secret" not in problem
