"""Job file → a validated, planned job, or every problem with its file and line.

Loading is all-or-nothing and happens before anything runs: YAML syntax, the
schema (unknown keys, types, durations), the plan (unknown or cyclic
dependencies, rules that do not parse or read unknown steps), command types
that name no connection, and ``file:`` scripts that are missing or not
executable are all collected into one :class:`JobFileError`.

Paths are resolved here: ``workdir`` defaults to the job file's directory and a
relative ``workdir`` is relative to it; ``file:`` paths are relative to the
workdir. The job's name is the job file's base name without its extension, as
in PgQuartz (it names the lock key and log files).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

from pgquartz.runner.loader import yamlmarks
from pgquartz.runner.model import records
from pgquartz.runner.model.base import ModelError
from pgquartz.runner.model.job import Command, Job
from pgquartz.runner.model.problems import JobFileError, Problem
from pgquartz.runner.plan import graph, matrix


class LoadedJob(records.Record):
    """A job that passed every check: ready to run."""

    path: pathlib.Path
    name: str
    job: Job
    plan: graph.Plan
    workdir: pathlib.Path

    def script_path(self, command: Command) -> pathlib.Path:
        """Where a command's ``file:`` is (absolute)."""
        assert command.file is not None
        return resolve_file(command.file, self.workdir)


def job_name(path: pathlib.Path) -> str:
    return path.name.split(".", 1)[0] if not path.name.startswith(".") else path.stem


def load(path: str | os.PathLike[str]) -> LoadedJob:
    """Read, validate and plan a job file; raise :class:`JobFileError` listing every problem."""
    file_path = pathlib.Path(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError([Problem((), "job file not found", file=str(file_path))]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise JobFileError([Problem((), f"cannot read job file: {error}", file=str(file_path))]) from None
    return load_text(text, path=file_path)


def load_text(text: str, *, path: pathlib.Path) -> LoadedJob:
    shown = str(path)
    try:
        marked = yamlmarks.load(text)
    except yamlmarks.YamlProblem as error:
        raise JobFileError(
            [
                problem.located(file=shown, line=problem.line, column=problem.column)
                for problem in error.problems
            ]
        ) from None

    if not isinstance(marked.data, dict):
        what = "empty" if marked.data is None else f"a {type(marked.data).__name__}"
        raise _located(
            [Problem((), f"a job file must be a mapping with at least 'steps', it is {what}")], marked, shown
        )
    overlay = os.environ.get(CONNECTION_PARAMS)
    if overlay:
        _merge_connection_params(marked.data, pathlib.Path(overlay), shown)
    try:
        job = Job.from_data(marked.data)
    except ModelError as error:
        raise _located(error.problems, marked, shown) from None
    except RecursionError:
        raise _located([Problem((), "the job file nests too deeply")], marked, shown) from None

    base = path.resolve().parent
    workdir = base if job.workdir is None else (base / os.path.expanduser(job.workdir)).resolve()
    problems: list[Problem] = []
    if not workdir.is_dir():
        problems.append(Problem(("workdir",), f"workdir {str(workdir)!r} is not a directory"))
    limit, limit_problem = max_instances(os.environ)
    problems += limit_problem
    plan, plan_problems = graph.build(job, max_instances=limit)
    problems += plan_problems
    problems += _command_problems(job, workdir)
    problems += _connection_problems(job)
    if problems or plan is None:
        raise _located(problems, marked, shown)
    return LoadedJob(path=path, name=job_name(path), job=job, plan=plan, workdir=workdir)


CONNECTION_PARAMS = "PGQUARTZ_CONNECTION_PARAMS"
"""A YAML file of ``{connection: {libpq keyword: value}}`` merged into the job's ``conn_params``: one
job file, run against several targets (the operator's ``targets``) without a copy per target."""


def _merge_connection_params(data: dict[str, Any], overlay: pathlib.Path, shown: str) -> None:
    where = f"{CONNECTION_PARAMS}={overlay}"
    try:
        params = yamlmarks.load(overlay.read_text(encoding="utf-8")).data
    except (OSError, UnicodeDecodeError) as error:
        raise JobFileError([Problem((), f"cannot read {where}: {error}", file=shown)]) from None
    except yamlmarks.YamlProblem as error:
        raise JobFileError([Problem((), f"{where}: {error}", file=shown)]) from None
    connections = data.get("connections")
    problems = []
    if not isinstance(params, dict) or not all(isinstance(value, dict) for value in params.values()):
        problems.append(Problem((), f"{where}: must map connection names to libpq parameters", file=shown))
    else:
        for name, values in params.items():
            target = connections.get(name) if isinstance(connections, dict) else None
            if not isinstance(target, dict):
                problems.append(
                    Problem((), f"{where}: no connection named {name!r} in the job file", file=shown)
                )
                continue
            base = target.get("conn_params")
            target["conn_params"] = {**(base if isinstance(base, dict) else {}), **values}
    if problems:
        raise JobFileError(problems)


def max_instances(environ: Mapping[str, str]) -> tuple[int, list[Problem]]:
    """``PGQUARTZ_MAX_INSTANCES``: how many instances a job may have (default 10000)."""
    text = environ.get("PGQUARTZ_MAX_INSTANCES", "")
    if not text:
        return matrix.MAX_INSTANCES, []
    if not text.isdigit() or int(text) < 1:
        return matrix.MAX_INSTANCES, [
            Problem((), f"PGQUARTZ_MAX_INSTANCES must be a positive number, not {text!r}")
        ]
    return int(text), []


def _located(problems: list[Problem], marked: yamlmarks.MarkedData, shown: str) -> JobFileError:
    located = []
    for problem in problems:
        position = marked.locate(problem.path)
        located.append(
            problem.located(
                file=shown,
                line=position.line if position else None,
                column=position.column if position else None,
            )
        )
    located.sort(key=lambda problem: (problem.line or 0, problem.column or 0))
    return JobFileError(located)


def resolve_file(file: str, workdir: pathlib.Path) -> pathlib.Path:
    return (workdir / os.path.expanduser(file)).absolute()


def _command_problems(job: Job, workdir: pathlib.Path) -> list[Problem]:
    """``file:`` scripts must exist (and shell ones be executable); the planner checks the rest."""
    if not workdir.is_dir():
        return []
    problems: list[Problem] = []
    for path, command in job.located_commands():
        if command.file is not None:
            problem = _file_problem(resolve_file(command.file, workdir), shell=command.is_shell)
            if problem:
                problems.append(Problem((*path, "file"), problem))
    return problems


def _connection_problems(job: Job) -> list[Problem]:
    """``conn_params`` keys must be libpq keywords (a typo would otherwise fail only at connect)."""
    if not job.connections:
        return []
    import difflib

    try:  # psycopg only for jobs with connections
        from psycopg import pq

        keywords = sorted(option.keyword.decode() for option in pq.Conninfo.get_defaults())
    except ImportError as error:  # psycopg without a libpq it can load
        return [Problem(("connections",), f"cannot check the connections' keywords: {error}")]
    problems = []
    for name, connection in job.connections.items():
        for key in connection.conn_params:
            if key not in keywords:
                close = difflib.get_close_matches(key, keywords, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else " (see libpq's connection keywords)"
                path = ("connections", name, "conn_params", key)
                problems.append(Problem(path, f"{key!r} is not a libpq connection keyword{hint}"))
    return problems


def _file_problem(file: pathlib.Path, *, shell: bool) -> str | None:
    if not file.exists():
        return f"{str(file)!r} does not exist"
    if not file.is_file():
        return f"{str(file)!r} is not a file"
    if shell and not os.access(file, os.X_OK):
        return f"script {str(file)!r} is not executable (chmod +x it)"
    if not os.access(file, os.R_OK):
        return f"{str(file)!r} is not readable"
    return None
