"""What a ``when`` rule may cost to parse, in either syntax.

Rules come from whoever writes a job, and the operator parses every rule of
every tenant's PgQuartzJob before it writes anything: a rule must not be able
to make a parser recurse until it fails, or run for long. These limits are far
above what maintenance rules need (PgQuartz's own examples are one line).
"""

from __future__ import annotations

MAX_RULE_LENGTH = 4096
MAX_NESTING = 32
"""Brackets (and, in Go templates, ``{{if}}`` blocks) inside each other."""
MAX_ACTIONS = 256
"""``{{ … }}`` actions in one Go-template rule."""


def nesting(rule: str) -> int:
    """How deep brackets nest in ``rule``, outside quoted strings."""
    depth = deepest = 0
    quote = ""
    escaped = False
    for char in rule:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "`":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def problem(rule: str) -> str | None:
    """Why ``rule`` is over the limits, or None."""
    if len(rule) > MAX_RULE_LENGTH:
        return f"a rule may be at most {MAX_RULE_LENGTH} characters long, not {len(rule)}"
    if nesting(rule) > MAX_NESTING:
        return f"brackets nest more than {MAX_NESTING} deep"
    return None
