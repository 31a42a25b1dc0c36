"""Job files written to hurt: each is refused as an invalid job (exit 2), cheaply, echoing nothing."""

from __future__ import annotations

import os
import pathlib
import resource
from collections.abc import Callable

import pytest

from pgquartz.runner import loader
from pgquartz.runner.model.problems import JobFileError
from tests.conftest import run_pgquartz


def problems_of(path: pathlib.Path) -> list[str]:
    with pytest.raises(JobFileError) as caught:
        loader.load(path)
    return [str(problem) for problem in caught.value.problems]


def alias_bomb() -> str:
    """Ten aliases on each of nine levels: a billion values from a few hundred bytes."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(levels) + "\nsteps: {s: {commands: [{inline: 'true'}]}}\n"


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(write_job: Callable[..., pathlib.Path]) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    [problem] = problems_of(write_job(alias_bomb()))
    assert "expands to more than 250000 values (aliases?)" in problem
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB


def test_yaml_nested_thousands_deep_is_an_invalid_job(write_job: Callable[..., pathlib.Path]) -> None:
    deep = "steps: {s: {commands: [{inline: " + "[" * 5000 + "]" * 5000 + "}]}}\n"
    [problem] = problems_of(write_job(deep))
    assert "invalid YAML" in problem and "nest" in problem  # libyaml limits depth; so does the loader


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("(" * 5000 + "1" + ")" * 5000, "at most 4096 characters"),
        ("{{if " * 30 + "true" + "}}x{{end}}" * 30 + " " * 10, "does not parse"),
        ('"x" * 800000000 == steps["a"].stdout', "works on numbers"),
    ],
)
def test_hostile_rules_make_validate_exit_2(
    write_job: Callable[..., pathlib.Path], rule: str, message: str
) -> None:
    job = write_job(
        "steps:\n  a: {commands: [{inline: 'true'}]}\n"
        f"  b: {{commands: [{{inline: 'true'}}], when: [{rule!r}], depends: [a]}}\n"
    )
    done = run_pgquartz("validate", str(job), cwd=job.parent)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_a_matrix_of_a_billion_instances_is_refused_before_it_is_expanded(
    write_job: Callable[..., pathlib.Path],
) -> None:
    values = "[" + ", ".join(str(n) for n in range(1000)) + "]"
    job = write_job(
        f"steps:\n  a:\n    matrix: {{x: {values}, y: {values}, z: {values}}}\n"
        "    commands: [{inline: 'true'}]\n"
    )
    [problem] = problems_of(job)
    assert "job.yml:3:" in problem
    assert "1000000000 instances" in problem and "limit of 10000 (PGQUARTZ_MAX_INSTANCES)" in problem


def test_the_instance_limit_is_configurable(write_job: Callable[..., pathlib.Path]) -> None:
    job = write_job("steps:\n  a:\n    matrix: {x: [1, 2, 3]}\n    commands: [{inline: 'true'}]\n")
    assert run_pgquartz("validate", str(job), cwd=job.parent).returncode == 0
    done = run_pgquartz("validate", str(job), cwd=job.parent, env={"PGQUARTZ_MAX_INSTANCES": "2"})
    assert done.returncode == 2 and "more than the limit of 2" in done.stderr


def test_a_file_that_is_no_job_file_is_not_echoed_back(tmp_path: pathlib.Path) -> None:
    """`pgquartz -c` of a symlink to a secret must not print its lines as unknown keys."""
    secret = tmp_path / "shadow"
    digest = "$6$Zq8s0Pw1$" + "k" * 86
    secret.write_text(f"root:{digest}:19000:0:99999:7::: x\nsteps: {{}}\n")
    link = tmp_path / "job.yml"
    os.symlink(secret, link)
    done = run_pgquartz("-c", str(link), cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown key" in done.stderr and digest[:30] not in done.stderr


def test_a_connection_called_shell_is_refused(write_job: Callable[..., pathlib.Path]) -> None:
    job = write_job(
        "connections: {shell: {conn_params: {host: db}}}\n"
        "steps: {a: {commands: [{type: shell, inline: 'select 1'}]}}\n"
    )
    [problem] = problems_of(job)
    assert "may not be called 'shell'" in problem
