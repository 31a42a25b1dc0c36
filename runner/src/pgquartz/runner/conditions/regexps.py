"""Regular expressions in rules (``RegExpContains``, ``matches``), through RE2.

PgQuartz's rules are Go templates, and Go's ``regexp`` package is RE2: its
syntax (no backreferences, no lookaround) and its guarantee that matching takes
time linear in the text. Python's own ``re`` backtracks, so a rule such as
``^(a|aa)+$`` over a command's output could hold the runner for hours, beyond
any ``timeout`` (the event loop never gets control back). google-re2 gives the
same syntax and the same guarantee as PgQuartz. It is imported only when a rule
asks for a regular expression.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable


class InvalidPattern(ValueError):
    """The pattern is no regular expression RE2 (and Go) accept; the message says why."""


class Pattern(Protocol):
    def search(self, text: str) -> object | None: ...


MAX_PATTERNS = 256
"""Compiled patterns kept for reuse: a rule is evaluated once per step, its patterns few."""


@functools.lru_cache(maxsize=MAX_PATTERNS)
def compile_pattern(pattern: str) -> Pattern:
    """``pattern`` compiled by RE2, with Go's syntax (Perl classes such as ``\\d``, word boundaries)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is raised here, with the rule; not also logged to stderr
    try:
        compiled: Pattern = re2.compile(pattern, options=options)
    except re2.error as error:
        reason = error.args[0] if error.args else "not a regular expression"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidPattern(str(reason)) from None
    return compiled


def any_line_matches(pattern: str, lines: Iterable[str]) -> bool:
    """Whether ``pattern`` is found in one of ``lines``, as PgQuartz's ``RegExpContains`` searches."""
    search: Callable[[str], object | None] = compile_pattern(pattern).search
    return any(search(line) is not None for line in lines)
