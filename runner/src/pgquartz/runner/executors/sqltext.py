"""SQL text, read the way PostgreSQL reads it: named arguments and statement boundaries.

PgQuartz turns ``:name`` into ``$n`` with a plain text scan and splits batches on
every ``;``, so a ``::integer`` cast, a ``;`` inside a string, or a PL/pgSQL body
break jobs. This module tokenizes just enough of PostgreSQL's lexical rules to
get both right: string constants (``'…'`` with ``''``, ``E'…'`` with backslash
escapes), quoted identifiers, ``--`` and nested ``/* */`` comments,
dollar-quoted bodies (``$$…$$``, ``$tag$…$tag$``), ``::`` casts, and
``BEGIN ATOMIC … END`` function bodies. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

# Identifier characters are ASCII letters, digits, _ and $, and every non-ASCII character. The
# classes are written as the ASCII characters they exclude: a class naming the range up to U+10FFFF
# costs the regular expression compiler ~15 ms at import each (40 ms for these three), this form 0.2.
_START = r"[^\x00-@\[-^`{-\x7f]"  # A-Z a-z _ and non-ASCII
_PART = r"[^\x00-#%-/:-@\[-^`{-\x7f]"  # A-Z a-z 0-9 _ $ and non-ASCII
_TAG_PART = r"[^\x00-/:-@\[-^`{-\x7f]"  # A-Z a-z 0-9 _ and non-ASCII: no $ in a dollar quote's tag
_IDENT_START = re.compile(_START)
_IDENT = re.compile(f"{_START}{_PART}*")
_DOLLAR_TAG = re.compile(rf"\$({_START}{_TAG_PART}*)?\$")


def _scan(sql: str) -> Iterator[tuple[str, int, int]]:
    """Yield (kind, start, end) for the parts that matter: 'param' (``:name``), 'semicolon', 'word'.

    Everything inside strings, identifiers, comments and dollar quotes is skipped.
    """
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif c == "'":
            backslashes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _is_ident_char(sql[i - 2]))
            i = _skip_quoted(sql, i, "'", backslashes=backslashes)
        elif c == '"':
            i = _skip_quoted(sql, i, '"', backslashes=False)
        elif c == "$":
            match = _DOLLAR_TAG.match(sql, i)
            if match and not (i > 0 and _is_ident_char(sql[i - 1])):
                close = sql.find(match.group(0), match.end())
                i = n if close < 0 else close + len(match.group(0))
            else:
                i += 1
        elif c == ":":
            if sql.startswith("::", i):
                i += 2
                continue
            match = _IDENT.match(sql, i + 1)
            if match:
                yield "param", i, match.end()
                i = match.end()
            else:
                i += 1
        elif c == ";":
            yield "semicolon", i, i + 1
            i += 1
        elif _IDENT_START.match(c):
            match = _IDENT.match(sql, i)
            assert match is not None
            yield "word", i, match.end()
            i = match.end()
        else:
            i += 1


def _is_ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or ord(c) >= 0x80


def _skip_quoted(sql: str, start: int, quote: str, *, backslashes: bool) -> int:
    i = start + 1
    n = len(sql)
    while i < n:
        c = sql[i]
        if backslashes and c == "\\":
            i += 2
        elif c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _skip_block_comment(sql: str, start: int) -> int:
    depth = 0
    i = start
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def bind_named(sql: str, args: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``:name`` (for each name in ``args``) with ``$1``, ``$2``…; return the values in order.

    The same name used twice gets the same number. A ``:word`` that is not an
    argument is left alone (PL/pgSQL's ``:=`` and slices like ``a[lo:hi]`` are
    untouched unless ``hi`` is an argument name). Values never become SQL text.
    """
    if not args:
        return sql, []
    numbers: dict[str, int] = {}
    parts: list[str] = []
    position = 0
    for kind, start, end in _scan(sql):
        if kind != "param":
            continue
        name = sql[start + 1 : end]
        if name not in args:
            continue
        number = numbers.setdefault(name, len(numbers) + 1)
        parts.append(sql[position:start])
        parts.append(f"${number}")
        position = end
    parts.append(sql[position:])
    return "".join(parts), [args[name] for name in numbers]


def split_statements(sql: str) -> list[str]:
    """Split on the ``;`` that end statements; drop empty ones (blank or only comments)."""
    if ";" not in sql and "--" not in sql and "/*" not in sql:  # the common one-statement command
        stripped = sql.strip()
        return [stripped] if stripped else []
    statements: list[str] = []
    position = 0
    atomic_depth = 0
    previous_word = ""
    for kind, start, end in _scan(sql):
        if kind == "word":
            word = sql[start:end].upper()
            if (word == "ATOMIC" and previous_word == "BEGIN") or (atomic_depth and word == "CASE"):
                atomic_depth += 1
            elif atomic_depth and word == "END":
                atomic_depth -= 1
            previous_word = word
        elif kind == "semicolon" and atomic_depth == 0:
            statements.append(sql[position:end])
            position = end
    statements.append(sql[position:])
    return [statement.strip() for statement in statements if _has_code(statement)]


def _has_code(statement: str) -> bool:
    """Whether anything but whitespace, comments and semicolons is left."""
    stripped = re.sub(r"--[^\n]*", "", statement)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.DOTALL)
    return bool(stripped.replace(";", "").strip())
