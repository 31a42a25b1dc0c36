"""A password held by the model that never shows itself.

A job file may carry a git HTTP password. Models get printed (reprs in logs, in
tracebacks, in ``pgquartz plan -v``), so the value is wrapped: its repr and its
written-back form are a mask, and only :meth:`Secret.reveal` gives the text, at
the one place that hands it to git.
"""

from __future__ import annotations

from typing import Annotated, Any

from pgquartz.runner.model import kinds

MASK = "**********"


class Secret:
    """Text that prints as a mask."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


def _parse(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError(f"input should be a valid string, got {type(value).__name__}")
    return Secret(value)


SecretText = Annotated[
    Secret,
    kinds.Custom(
        _parse,
        dump=lambda _: MASK,
        schema={"format": "password", "type": "string", "writeOnly": True},
    ),
]
"""A model field type: a password given as text, kept as a :class:`Secret`."""
