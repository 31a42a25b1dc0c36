"""What a ``when`` rule sees: read-only views of the steps' results so far.

PgQuartz's rules read ``.Steps["name"].Instances.Rc`` and friends; Jinja2 rules
read ``steps["name"].rc``. Both are served from the same :class:`StepSnapshot`
values the engine hands over, through views that expose an explicit allow-list
of names, so a rule can read results and nothing else.

``Rc`` sums command → instance → step, exactly as PgQuartz's manual says;
``StdOut``/``StdErr`` concatenate in instance order (the matrix order), then
command order. A step that was skipped, or has not run, reads as Rc 0 and
empty output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pgquartz.runner.conditions import regexps
from pgquartz.runner.model import records
from pgquartz.runner.model.results import InstanceResult, StepState


class StepSnapshot(records.Record, kw_only=False):
    """A step's state and the results of its finished instances (in matrix order)."""

    state: StepState
    instances: tuple[InstanceResult, ...] = ()


Snapshot = Mapping[str, StepSnapshot]
"""Step name → snapshot, for every step of the job."""


class RuleError(Exception):
    """A rule could not be evaluated (a type mismatch, a bad regular expression…)."""


# ----------------------------------------------------------------------------------------------
# Go-template views
# ----------------------------------------------------------------------------------------------


class GoResult:
    """PgQuartz's ``Result``: output as lines, with its three search methods."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: list[str] = text.removesuffix("\n").split("\n") if text else []

    def go_attr(self, name: str, args: Sequence[Any]) -> Any:
        if name == "Contains":
            (part,) = _string_args(name, args, 1)
            return any(part in line for line in self.lines)
        if name == "ContainsLine":
            (wanted,) = _string_args(name, args, 1)
            return any(line == wanted for line in self.lines)
        if name == "RegExpContains":
            (pattern,) = _string_args(name, args, 1)
            return _any_line_matches(pattern, self.lines)
        if name == "String" and not args:
            return self.text
        raise RuleError(f"a Result has no method {name} (it has Contains, ContainsLine, RegExpContains)")

    def go_truth(self) -> bool:
        return bool(self.lines)

    def __str__(self) -> str:
        return self.text


class GoOutputs:
    """What ``.Steps["x"]`` and ``.Steps["x"].Instances`` both offer: Rc, StdOut, StdErr."""

    def __init__(self, instances: Sequence[InstanceResult], state: StepState) -> None:
        self._instances = instances
        self._state = state

    def go_attr(self, name: str, args: Sequence[Any]) -> Any:
        if args:
            raise RuleError(f"{name} takes no arguments")
        if name == "Rc":
            return sum(instance.rc for instance in self._instances)
        if name == "StdOut":
            return GoResult("".join(instance.stdout for instance in self._instances))
        if name == "StdErr":
            return GoResult("".join(instance.stderr for instance in self._instances))
        if name == "Instances":
            return self
        if name == "State":
            return self._state.value
        raise RuleError(f"unknown field {name} (use Instances, Rc, StdOut, StdErr or State)")

    def go_truth(self) -> bool:
        return True


def go_root(snapshot: Snapshot) -> GoRoot:
    return GoRoot(snapshot)


class GoRoot:
    """The template's dot: ``.Steps`` is the only field."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def go_attr(self, name: str, args: Sequence[Any]) -> Any:
        if name == "Steps" and not args:
            return GoSteps(self._snapshot)
        raise RuleError(f"unknown field .{name} (rules read .Steps)")

    def go_truth(self) -> bool:
        return True


class GoSteps:
    """``.Steps``: indexable by step name."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def go_index(self, key: Any) -> GoOutputs:
        if not isinstance(key, str) or key not in self._snapshot:
            raise RuleError(f"no step named {key!r}")
        snapshot = self._snapshot[key]
        return GoOutputs(snapshot.instances, snapshot.state)

    def go_truth(self) -> bool:
        return bool(self._snapshot)

    def __len__(self) -> int:
        return len(self._snapshot)


def _string_args(name: str, args: Sequence[Any], count: int) -> Sequence[str]:
    if len(args) != count or not all(isinstance(arg, str) for arg in args):
        raise RuleError(f"{name} takes {count} string argument(s), got {list(args)!r}")
    return args


def _any_line_matches(pattern: str, lines: Sequence[str]) -> bool:
    try:
        return regexps.any_line_matches(pattern, lines)
    except regexps.InvalidPattern as error:
        raise RuleError(f"invalid regular expression {pattern!r}: {error}") from None


# ----------------------------------------------------------------------------------------------
# Jinja2 views
# ----------------------------------------------------------------------------------------------


class Output:
    """A step's (or instance's) output for Jinja2 rules: text with search helpers.

    ``"x" in out`` searches the whole text; ``out.contains(s)`` and
    ``out.contains_line(s)`` and ``out.matches(regex)`` search line by line as
    PgQuartz does.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: list[str] = text.removesuffix("\n").split("\n") if text else []

    def __contains__(self, part: object) -> bool:
        return isinstance(part, str) and part in self.text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Output):
            return self.text == other.text
        return isinstance(other, str) and self.text == other

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.text)

    def __len__(self) -> int:
        return len(self.text)

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)

    def contains(self, part: str) -> bool:
        return any(part in line for line in self.lines)

    def contains_line(self, line: str) -> bool:
        return line in self.lines

    def matches(self, pattern: str) -> bool:
        return _any_line_matches(pattern, self.lines)


class InstanceView(records.Record, kw_only=False):
    """One instance's results for Jinja2 rules."""

    args: Mapping[str, str]
    rc: int
    stdout: Output
    stderr: Output
    failed: bool


class StepView(records.Record, kw_only=False):
    """``steps["name"]`` in a Jinja2 rule."""

    state: str
    rc: int
    stdout: Output
    stderr: Output
    skipped: bool
    failed: bool
    instances: tuple[InstanceView, ...]


def step_views(snapshot: Snapshot) -> dict[str, StepView]:
    return {name: _step_view(step) for name, step in snapshot.items()}


def _step_view(step: StepSnapshot) -> StepView:
    instances = tuple(
        InstanceView(
            args=dict(instance.args),
            rc=instance.rc,
            stdout=Output(instance.stdout),
            stderr=Output(instance.stderr),
            failed=instance.failed,
        )
        for instance in step.instances
    )
    return StepView(
        state=step.state.value,
        rc=sum(instance.rc for instance in instances),
        stdout=Output("".join(instance.stdout.text for instance in instances)),
        stderr=Output("".join(instance.stderr.text for instance in instances)),
        skipped=step.state is StepState.SKIPPED,
        failed=any(instance.failed for instance in instances),
        instances=instances,
    )
