"""The step graph: explicit ``depends`` plus the steps each ``when`` rule reads.

PgQuartz evaluates a rule when its step is scheduled and asks users to add the
steps a rule reads to ``depends`` by hand; forgetting one makes the rule read
results that do not exist yet (Rc 0, empty output) and decide wrongly. Here the
steps a rule reads are added as dependencies automatically. The graph is
checked for unknown steps and cycles, and every command's ``type`` must be
``shell`` or a connection's name, reporting every problem with its key path.
These checks are pure, so the operator runs them on a PgQuartzJob before it
writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pgquartz.runner.model import records
from pgquartz.runner.model.job import Check, Job, Step
from pgquartz.runner.model.problems import Problem
from pgquartz.runner.plan import matrix

if TYPE_CHECKING:  # the rule parser is imported by the jobs that have rules (a tenth of start-up)
    from pgquartz.runner.conditions import rules


class PlannedStep(records.Record):
    """A step ready to schedule: its rules parsed, its instances expanded."""

    name: str
    step: Step
    depends: tuple[str, ...]
    """Explicit dependencies, in file order."""
    implied: tuple[str, ...]
    """Steps read by rules but not listed in ``depends`` (added automatically)."""
    rules: tuple[rules.Rule, ...]
    instances: tuple[matrix.Args, ...]

    @property
    def waits_for(self) -> tuple[str, ...]:
        return self.depends + self.implied


class PlannedCheck(records.Record):
    check: Check
    instances: tuple[matrix.Args, ...]


class Plan(records.Record):
    """What will run, in which order, and what gates what. Pure data."""

    job: Job
    steps: Mapping[str, PlannedStep]
    order: tuple[str, ...]
    """A topological order (ties in file order): the order steps can start in with one runner."""
    checks: tuple[PlannedCheck, ...]

    @property
    def instance_count(self) -> int:
        return sum(len(step.instances) for step in self.steps.values())

    def dependants(self) -> dict[str, tuple[str, ...]]:
        """Step → the steps waiting for it."""
        result: dict[str, list[str]] = {name: [] for name in self.steps}
        for name in self.order:
            for dependency in self.steps[name].waits_for:
                result[dependency].append(name)
        return {name: tuple(names) for name, names in result.items()}


def build(
    job: Job, *, max_instances: int = matrix.MAX_INSTANCES, checkpoint: Callable[[], None] | None = None
) -> tuple[Plan | None, list[Problem]]:
    """Plan a job; return the plan (None if it cannot run) and every problem found.

    A job may have at most ``max_instances`` instances (steps' and checks' together): counted
    before anything is expanded, so a matrix of 1000 × 1000 × 1000 values costs nothing.
    ``checkpoint`` is called before each step is planned: a caller with a time budget (the
    operator, planning every tenant's jobs) raises from it to stop."""
    problems: list[Problem] = []
    too_many = _instance_problems(job, max_instances)
    problems += too_many
    planned: dict[str, PlannedStep] = {}
    for name, step in job.steps.items():
        if checkpoint is not None:
            checkpoint()
        planned[name] = _plan_step(name, step, job, problems, expand=not too_many)
    order = _order(planned, problems)
    problems += _type_problems(job)
    problems += _gate_problems(job)
    checks = tuple(
        PlannedCheck(check=check, instances=tuple(matrix.expand(check.matrix)) if not too_many else ())
        for check in job.checks
    )
    if problems:
        return None, problems
    return Plan(job=job, steps=planned, order=order, checks=checks), problems


def _instance_problems(job: Job, limit: int) -> list[Problem]:
    counted: list[tuple[tuple[str | int, ...], int]] = [
        (("steps", name, "matrix"), matrix.count(step.matrix)) for name, step in job.steps.items()
    ]
    counted += [
        (("checks", index, "matrix"), matrix.count(check.matrix)) for index, check in enumerate(job.checks)
    ]
    total = sum(count for _, count in counted)
    if total <= limit:
        return []
    path, largest = max(counted, key=lambda item: item[1])
    return [
        Problem(
            path,
            f"the job has {total} instances ({largest} here), more than the limit of {limit}"
            " (PGQUARTZ_MAX_INSTANCES)",
        )
    ]


def _plan_step(name: str, step: Step, job: Job, problems: list[Problem], *, expand: bool) -> PlannedStep:
    depends: list[str] = []
    for index, dependency in enumerate(step.depends):
        path = ("steps", name, "depends", index)
        if dependency == name:
            problems.append(Problem(path, f"step {name!r} cannot depend on itself"))
        elif dependency not in job.steps:
            problems.append(Problem(path, f"unknown step {dependency!r}{_suggest(dependency, job)}"))
        elif dependency not in depends:
            depends.append(dependency)
    parsed, implied = _parse_rules(name, step, job, problems, depends) if step.when else ([], [])
    return PlannedStep(
        name=name,
        step=step,
        depends=tuple(depends),
        implied=tuple(implied),
        rules=tuple(parsed),
        instances=tuple(matrix.expand(step.matrix)) if expand else (),
    )


def _parse_rules(
    name: str, step: Step, job: Job, problems: list[Problem], depends: list[str]
) -> tuple[list[rules.Rule], list[str]]:
    """A step's ``when`` rules, parsed, and the steps they read beyond ``depends``."""
    from pgquartz.runner.conditions import rules

    parsed: list[rules.Rule] = []
    implied: list[str] = []
    for index, source in enumerate(step.when):
        path = ("steps", name, "when", index)
        try:
            rule = rules.compile_rule(source)
        except rules.RuleSyntaxError as error:
            shown = source if len(source) <= 80 else f"{source[:60]}…"
            problems.append(Problem(path, f"rule {shown!r} does not parse: {error}"))
            continue
        parsed.append(rule)
        for read in sorted(rule.reads):
            if read == name:
                problems.append(Problem(path, f"a rule of step {name!r} cannot read its own results"))
            elif read not in job.steps:
                problems.append(Problem(path, f"rule reads unknown step {read!r}{_suggest(read, job)}"))
            elif read not in depends and read not in implied:
                implied.append(read)
    return parsed, implied


def _type_problems(job: Job) -> list[Problem]:
    """A command's ``type`` must be ``shell`` or a connection: otherwise nothing could run it."""
    return [
        Problem((*path, "type"), _unknown_type(command.type, job))
        for path, command in job.located_commands()
        if not command.is_shell and command.type not in job.connections
    ]


def _gate_problems(job: Job) -> list[Problem]:
    """A built-in gate reads a connection: one that exists, named unless the job has only one."""
    problems = []
    for path, gate in job.located_gates():
        if gate.kind == "custom":
            continue
        if gate.connection is None and len(job.connections) != 1:
            known = ", ".join(repr(name) for name in job.connections) or "none are defined"
            problems.append(Problem(path, f"name the connection this gate reads ('connection:'; {known})"))
        elif gate.connection is not None and gate.connection not in job.connections:
            known = ", ".join(repr(name) for name in job.connections) or "none are defined"
            problems.append(
                Problem((*path, "connection"), f"no connection named {gate.connection!r} ({known})")
            )
    return problems


def _unknown_type(kind: str, job: Job) -> str:
    if not job.connections:
        return f"type {kind!r} is neither 'shell' nor a connection (no connections are defined)"
    known = ", ".join(repr(name) for name in job.connections)
    return f"type {kind!r} is neither 'shell' nor a connection (connections: {known})"


def _suggest(name: str, job: Job) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(job.steps), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _order(planned: Mapping[str, PlannedStep], problems: list[Problem]) -> tuple[str, ...]:
    """Kahn's algorithm with file-order ties; report each cycle once."""
    names = list(planned)
    position = {name: index for index, name in enumerate(names)}
    waiting = {
        name: {dep for dep in planned[name].waits_for if dep in planned and dep != name} for name in names
    }
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(names):
        ready = [name for name in names if name not in done and not waiting[name] - done]
        if not ready:
            break
        ready.sort(key=position.__getitem__)
        order.append(ready[0])
        done.add(ready[0])
    if len(order) < len(names):
        stuck = [name for name in names if name not in done]
        cycle = _find_cycle(stuck, waiting, done)
        shown = " → ".join(repr(name) for name in [*cycle, cycle[0]])
        problems.append(Problem(("steps", cycle[0]), f"dependency cycle: {shown}"))
    return tuple(order)


def _find_cycle(stuck: list[str], waiting: Mapping[str, set[str]], done: set[str]) -> list[str]:
    path: list[str] = []
    current = stuck[0]
    while current not in path:
        path.append(current)
        current = sorted(waiting[current] - done, key=stuck.index)[0]
    return path[path.index(current) :]
