"""Would the runner accept the job files a PgQuartzJob renders? Checked before anything is written.

The CRD's schema catches the shape of ``spec.job``, but not what only the
runner's planner sees: a ``depends`` naming no step, a dependency cycle, a
``when`` rule that does not parse or reads an unknown step, a command whose
``type`` is neither ``shell`` nor a connection, a lock without endpoints. Left
to the runner, each would fail every scheduled run with exit code 2 (never
retried), hours after ``kubectl apply`` said "configured". The operator runs
the same pure checks (the runner's model and planner, no I/O) on every rendered
job file and reports problems against the user's fields (``spec.job.steps.…``,
``spec.connections.…``, ``spec.lock``) in the ``Ready`` condition.

:func:`script_problems` checks that ``file:`` scripts are keys of the scripts
ConfigMap (the handlers read its key names). Left to the runner, which checks
at start and exits 2: ``params`` keys that are not libpq keywords (the check
needs the PostgreSQL driver's list) and ``file:`` paths outside the scripts
ConfigMap (absolute paths into the image).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from pgquartz.runner.model import Job
from pgquartz.runner.model.base import ModelError
from pgquartz.runner.plan import graph, matrix

_TOP = {
    "steps": "spec.job.steps",
    "checks": "spec.job.checks",
    "connections": "spec.connections",
    "etcdConfig": "spec.lock",
}
_RENAMED = {"conn_params": "params", "lockKey": "key", "lockTimeout": "ttl"}


def user_path(path: tuple[str | int, ...]) -> str:
    """A job file's key path as the PgQuartzJob field a user wrote (``spec.job.steps.vacuum.depends[0]``)."""
    if not path:
        return "spec.job"
    head, *rest = path
    text = _TOP.get(str(head), f"spec.job.{head}")
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{_RENAMED.get(part, part)}"
    return text


_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _job_file(config_map: Mapping[str, Any]) -> Any:
    """The rendered ConfigMap's one job file (targets' ``.conn`` files hold connection parameters)."""
    [text] = [text for key, text in config_map.get("data", {}).items() if key.endswith(".yml")]
    return yaml.load(text, Loader=_LOADER)  # a safe loader: libyaml's, where PyYAML has it


BUDGET_SECONDS = 5.0
"""How long checking one resource's job may take (``PGQUARTZ_VALIDATION_SECONDS``): every rule is
bounded, but a spec can hold thousands of them, and the operator serves every tenant."""


class _OverBudget(Exception):
    pass


def job_file_problems(
    config_map: Mapping[str, Any],
    *,
    max_instances: int = matrix.MAX_INSTANCES,
    budget_seconds: float = BUDGET_SECONDS,
) -> list[str]:
    """Every problem the runner would report for the job file in a rendered ConfigMap, found within
    ``budget_seconds`` (past it, one problem says so)."""
    deadline = time.monotonic() + budget_seconds

    def checkpoint() -> None:
        if time.monotonic() > deadline:
            raise _OverBudget

    try:
        return list(dict.fromkeys(_problems(_job_file(config_map), max_instances, checkpoint)))
    except _OverBudget:
        return [
            f"spec.job: checking the job took longer than {budget_seconds:g} s"
            " (PGQUARTZ_VALIDATION_SECONDS): split it, or ask the operator's admin"
        ]


def _problems(data: Any, max_instances: int, checkpoint: Callable[[], None]) -> list[str]:
    checkpoint()
    try:
        job = Job.from_data(data)
    except ModelError as error:
        return [f"{user_path(problem.path)}: {problem.message}" for problem in error.problems]
    _, found = graph.build(job, max_instances=max_instances, checkpoint=checkpoint)
    return [f"{user_path(problem.path)}: {problem.message}" for problem in found]


CONFIG_MAP_LIMIT = 1024 * 1024
"""What one ConfigMap may hold (the API server's limit on its data)."""


def size_problems(config_map: Mapping[str, Any]) -> list[str]:
    """A rendered ConfigMap the API server would refuse as too large, said in the user's terms."""
    files = config_map.get("data", {})
    size = sum(len(text.encode()) for text in files.values())
    if size <= CONFIG_MAP_LIMIT:
        return []
    return [
        f"spec.job: the job file takes {size} bytes, more than a ConfigMap holds ({CONFIG_MAP_LIMIT} bytes):"
        " move long commands into scripts (spec.scripts)"
    ]


def script_problems(config_map: Mapping[str, Any], files: set[str], scripts: str) -> list[str]:
    """``file:`` commands naming no key of the scripts ConfigMap ``scripts`` (whose keys are ``files``)."""
    try:
        job = Job.from_data(_job_file(config_map))
    except ModelError:
        return []  # reported by job_file_problems
    problems: list[str] = []
    workdir = job.workdir or "/"  # the renderer points workdir at the mounted ConfigMap
    for path, command in job.located_commands():
        name = command.file
        if name is None or name.startswith(("/", "~")):
            continue
        relative = posixpath.relpath(posixpath.normpath(posixpath.join(workdir, name)), workdir)
        if relative not in files:
            problems.append(f"{user_path((*path, 'file'))}: {name!r} is not a key of ConfigMap {scripts!r}")
    return problems
