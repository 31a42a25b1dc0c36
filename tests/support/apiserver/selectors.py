"""Label selectors, as the API server reads them on a list or a watch.

Without them the emulator sends every object to every watcher, and an operator that
asks the server for its own objects only could not be told from one that filters
them itself. Syntax (apimachinery's labels.Parse, pkg/labels/selector.go):
``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``,
``key in (a,b)``, ``key notin (a,b)``, joined by commas, all of which must hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Labels = Mapping[str, str]
Requirement = Callable[[Labels], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^()]*)\)$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")


class SelectorError(ValueError):
    """A selector the server would refuse (400)."""


def parse(text: str) -> list[Requirement]:
    return [_requirement(part.strip()) for part in _split(text) if part.strip()]


def matches(requirements: list[Requirement], labels: Labels | None) -> bool:
    return all(requirement(labels or {}) for requirement in requirements)


def _split(text: str) -> list[str]:
    """Commas separate requirements, except inside a set's parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _requirement(text: str) -> Requirement:
    if match := _SET.match(text):
        key, operator, values = match.group(1), match.group(3), match.group(4)
        allowed = {value.strip() for value in values.split(",")}
        if not all(re.fullmatch(_VALUE, value) for value in allowed):
            raise SelectorError(f"unable to parse requirement: invalid values in {text!r}")
        if operator == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    if match := _EQUALITY.match(text):
        key, operator, value = match.group(1), match.group(3), match.group(4)
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negated, key = match.group(1) == "!", match.group(2)
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {text!r}")
