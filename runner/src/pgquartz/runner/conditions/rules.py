"""One ``when`` rule, whichever syntax it is written in.

PgQuartz's Go-template rules are recognised by what only they contain: ``.Steps``,
a ``{{ }}`` action, or a leading Go call (``eq a b``: Jinja2 has no prefix calls).
Everything else is a Jinja2 expression. A
:class:`Rule` knows which steps it reads (so the planner can wait for them)
and evaluates to a bool against a snapshot of results.
"""

from __future__ import annotations

import enum
from typing import Any

from pgquartz.runner.conditions import gotemplate
from pgquartz.runner.conditions.gotemplate import RuleSyntaxError
from pgquartz.runner.conditions.views import RuleError, Snapshot
from pgquartz.runner.model import records

__all__ = ["Rule", "RuleError", "RuleSyntaxError", "Syntax", "compile_rule"]


class Syntax(enum.Enum):
    GO_TEMPLATE = "go-template"
    JINJA = "jinja2"


class Rule(records.Record, kw_only=False):
    """A parsed rule. ``reads`` names the steps whose results it needs."""

    source: str
    syntax: Syntax
    reads: frozenset[str]
    _parsed: Any = records.field(repr=False, compare=False)
    """A :class:`gotemplate.Template` or a ``jinja.Expression``."""

    def holds(self, snapshot: Snapshot) -> bool:
        """Evaluate against the results so far; raises :class:`RuleError` if it cannot."""
        if isinstance(self._parsed, gotemplate.Template):
            return gotemplate.holds(self._parsed, snapshot)
        from pgquartz.runner.conditions import jinja

        return jinja.holds(self._parsed, snapshot)


_GO_CALLS = ("eq", "ne", "lt", "le", "gt", "ge", "and", "or", "index", "len")


def detect_syntax(source: str) -> Syntax:
    """Go templates are told apart by what only they can contain or start with."""
    text = source.strip()
    if ".Steps" in text or ("{{" in text and "}}" in text) or text.startswith((".", "(")):
        return Syntax.GO_TEMPLATE
    first, _, rest = text.partition(" ")
    if first in _GO_CALLS and rest:
        return Syntax.GO_TEMPLATE
    return Syntax.JINJA


def compile_rule(source: str) -> Rule:
    """Parse a rule; raises :class:`RuleSyntaxError` with a message fit for a user."""
    if not source.strip():
        raise RuleSyntaxError("empty rule")
    syntax = detect_syntax(source)
    if syntax is Syntax.GO_TEMPLATE:
        template = gotemplate.parse(source)
        return Rule(source, syntax, gotemplate.steps_read(template), template)
    from pgquartz.runner.conditions import jinja  # only jobs with Jinja2 rules pay for importing it

    expression = jinja.parse(source)
    return Rule(source, syntax, expression.reads, expression)
