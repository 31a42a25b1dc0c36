"""A problem in a job file: where it is (key path, and file and line once located) and what is wrong.

Every check that runs before a job starts (YAML syntax, schema, dependencies,
rules, scripts, connections) reports :class:`Problem` values rather than raising
at the first one, so a user sees everything to fix in one report.
"""

from __future__ import annotations

from typing import NamedTuple

Path = tuple[str | int, ...]


class Problem(NamedTuple):
    """A value (a named tuple: cheap to make by the thousand, and no dataclass machinery to import)."""

    path: Path
    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def located(self, *, file: str | None, line: int | None, column: int | None) -> Problem:
        return self._replace(file=file, line=line, column=column)

    @property
    def key_path(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        where = self.file or "<job>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.key_path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


SHOWN_KEY = 40
"""Characters of a key a message quotes: a file that is no job file (a symlink to a secret, say)
must not have its lines echoed back as "unknown keys"."""


def shown_key(key: str) -> str:
    return key if len(key) <= SHOWN_KEY else key[: SHOWN_KEY - 12] + "…"


def format_path(path: Path) -> str:
    """``('steps', 'step 1', 'commands', 0, 'file')`` → ``steps["step 1"].commands[0].file``."""
    text = ""
    for raw in path:
        part = shown_key(raw) if isinstance(raw, str) else raw
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]' if text else f'"{part}"'
    return text


class JobFileError(Exception):
    """The job file cannot run; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))
