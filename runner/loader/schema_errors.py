"""Pydantic's validation errors, rewritten for people who edit job files.

Pydantic says "Extra inputs are not permitted" at ``('steps', 'a', 'depend')``;
a user wants "unknown key 'depend' (did you mean 'depends'?)" at line 7.
This module turns each error into a :class:`Problem` with its key path, and
finds the keys that were allowed where an unknown one was written by walking
the model's fields.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

import pydantic

from pgquartz.runner.model.job import Job
from pgquartz.runner.model.problems import Path, Problem, shown_key


def problems_from(error: pydantic.ValidationError) -> list[Problem]:
    problems = []
    for detail in error.errors(include_url=False):
        path: Path = tuple(detail["loc"])
        problems.append(Problem(path, _message(detail, path)))
    return problems


def _message(detail: Any, path: Path) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        allowed = allowed_keys(path[:-1])
        hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        known = f"; allowed here: {', '.join(allowed)}" if allowed and not hint else ""
        return f"unknown key {shown_key(key)!r}{suggestion}{known}"
    if kind == "missing":
        return f"missing required key {path[-1]!r}" if path else "missing required key"
    message = str(detail["msg"]).removeprefix("Value error, ")
    if kind in ("too_short",) and isinstance(detail.get("input"), dict | list):
        return "must not be empty" if not detail["input"] else message
    given = detail.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "enum":
        return f"{message[0].lower()}{message[1:]}, got {_show(given)}"
    return message[0].lower() + message[1:] if message else kind


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def allowed_keys(path: Path) -> list[str]:
    """The keys a job file may use at ``path`` (a mapping of the model), as written in files."""
    annotation: Any = Job
    for part in path:
        annotation = _step_into(annotation, part)
        if annotation is None:
            return []
    model = _as_model(annotation)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _as_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None


def _step_into(annotation: Any, part: str | int) -> Any:
    model = _as_model(annotation)
    if model is not None:
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                return (
                    field.annotation
                    if not field.metadata
                    else typing.Annotated[field.annotation, *field.metadata]
                )
        return None
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0]
    return None
