"""Jinja2 ``when`` rules: pgquartz's native rule syntax, evaluated in Jinja2's sandbox.

A rule is one Jinja2 expression over ``steps``, e.g.
``steps["step 1"].rc == 0 and "{datname}={mydb}" in steps["step 2"].stdout``.
Each step offers ``rc``, ``stdout``, ``stderr`` (text with ``contains``,
``contains_line`` and ``matches``), ``state``, ``skipped``, ``failed`` and
``instances``. The sandbox refuses private attributes and anything that could
execute code; an unknown name is an error, never silently empty.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pgquartz.runner.conditions.gotemplate import RuleSyntaxError
from pgquartz.runner.conditions.views import RuleError, Snapshot, step_views

_ENVIRONMENT = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


@dataclasses.dataclass(frozen=True)
class Expression:
    source: str
    compiled: Any
    reads: frozenset[str]


def parse(rule: str) -> Expression:
    """Compile a Jinja2 rule; raise :class:`RuleSyntaxError` with the parser's message."""
    try:
        tree = _ENVIRONMENT.parse("{{ (" + rule + ") }}")
        compiled = _ENVIRONMENT.compile_expression(rule, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise RuleSyntaxError(f"not a valid expression: {error.message}") from None
    return Expression(rule, compiled, _steps_read(tree))


def _steps_read(tree: nodes.Template) -> frozenset[str]:
    names: set[str] = set()
    allowed: set[int] = set()
    for node in tree.find_all((nodes.Getitem, nodes.Getattr)):
        assert isinstance(node, nodes.Getitem | nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                if not isinstance(node.arg.value, str):
                    raise RuleSyntaxError("a step name in a rule must be a quoted string")
                names.add(node.arg.value)
            elif isinstance(node, nodes.Getattr):
                names.add(node.attr)
            else:
                raise RuleSyntaxError('a step name in a rule must be a quoted string, as in steps["step 1"]')
            allowed.add(id(node.node))
    for name in tree.find_all(nodes.Name):
        if name.name != "steps":
            raise RuleSyntaxError(f'unknown name {name.name!r} (rules read steps["name"])')
        if id(name) not in allowed:
            raise RuleSyntaxError('steps must be followed by a step name, as in steps["step 1"]')
    return frozenset(names)


def holds(expression: Expression, snapshot: Snapshot) -> bool:
    try:
        value = expression.compiled(steps=step_views(snapshot))
    except RuleError:
        raise
    except jinja2.UndefinedError as error:
        raise RuleError(str(error)) from None
    except Exception as error:  # a sandbox refusal, a type error, …: the rule is wrong, not the run
        raise RuleError(f"{type(error).__name__}: {error}") from None
    return bool(value)
