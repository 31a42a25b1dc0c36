"""The base of the job model's classes: pydantic v2 as a job file needs it, its errors as Problems.

Every class of the model is a pydantic model: frozen, closed (an unknown key is
an error, with the nearest known key suggested), read by the keys job files
write (``batchMode``: the fields' aliases) or by the fields' names, never both
for one field. :meth:`JobModel.from_data` validates what YAML gave and turns
pydantic's errors into :class:`~pgquartz.runner.model.problems.Problem` values
at their key paths, in words a job file's author reads ("input should be a
valid integer, got 'many'"), every one of them from one pass; the loader adds
file, line and column to each. :meth:`JobModel.to_data` writes an instance back
as job files write it (the operator renders job files from it). The operator's
PgQuartzJob resource holds these same classes, so a job file and a resource's
``spec.job`` are read by one model and described by one JSON Schema.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Self

import pydantic
import pydantic_core

from pgquartz.runner.model.problems import Path, Problem, format_path, shown_key


class ModelError(ValueError):
    """Data that does not fit the model; carries every problem, each with its key path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(_described(problem) for problem in problems))


def _described(problem: Problem) -> str:
    return f"{format_path(problem.path)}: {problem.message}" if problem.path else problem.message


def refused(
    model: type[pydantic.BaseModel], problems: Sequence[tuple[Path, str]]
) -> pydantic.ValidationError:
    """What a model's own check raises for problems at key paths below the model (pydantic puts
    them under the model's own place)."""
    return pydantic_core.ValidationError.from_exception_data(
        model.__name__,
        [
            {
                "type": pydantic_core.PydanticCustomError("refused", "{message}", {"message": message}),
                "loc": path,
                "input": None,
            }
            for path, message in problems
        ],
    )


class JobModel(pydantic.BaseModel):
    """Frozen, closed data of a job file, read by its keys or field names."""

    model_config = pydantic.ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        hide_input_in_errors=True,  # a value (a password, say) never reaches a message by accident
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _one_key_per_field(cls, data: Any) -> Any:
        """A field given both by its key and by its name is a mistake, not a choice between them."""
        if not isinstance(data, Mapping):
            return data
        twice = [
            ((name,), f"{name!r} is {field.alias!r} again: give it once")
            for name, field in cls.model_fields.items()
            if field.alias and field.alias != name and field.alias in data and name in data
        ]
        if twice:
            raise refused(cls, twice)
        return data

    @classmethod
    def from_data(cls, data: Any) -> Self:
        """Validate plain data (a mapping from a job file) into an instance, or raise :class:`ModelError`
        with every problem found."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as error:
            raise ModelError(problems_of(error, cls)) from None

    def to_data(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        """Plain data, keys as job files write them (``exclude_defaults``: only what differs from them)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=exclude_defaults)


def _whole(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic reads true as 1; a job file that says `parallel: true` is wrong
        raise ValueError(f"input should be a valid integer, got {value!r}")
    return value


Whole = Annotated[int, pydantic.BeforeValidator(_whole)]
"""An integer as job files write it: ``4``, ``"4"`` or ``4.0``, but not ``true`` nor ``2.5``."""


# --- pydantic's errors in a job file's words --------------------------------------------------------


def show(value: Any) -> str:
    """A value as a message quotes it: short, and never a whole mapping."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


EXPECTED = {
    "string_type": "a valid string",
    "bool_type": "a valid boolean",
    "bool_parsing": "a valid boolean",
    "int_type": "a valid integer",
    "int_parsing": "a valid integer",
    "int_from_float": "a valid integer",
    "float_type": "a valid number",
    "float_parsing": "a valid number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
"""What an error of each of pydantic's types says was expected."""


def problems_of(error: pydantic.ValidationError, model: type[pydantic.BaseModel]) -> list[Problem]:
    """Every error of ``error`` (raised validating ``model``) as a problem at its key path."""
    found: list[Problem] = []
    for detail in error.errors(include_url=False):
        path: Path = tuple(detail["loc"])
        if path and path[-1] == "[key]":
            found.append(Problem(path[:-2] + path[-2:-1], f"a key should be a string, got {show(path[-2])}"))
            continue
        found.append(Problem(path, _message(detail, model)))
    return found


def _message(detail: Any, model: type[pydantic.BaseModel]) -> str:
    kind, context, path = detail["type"], detail.get("ctx") or {}, tuple(detail["loc"])
    given = detail.get("input")
    if kind == "missing":
        return f"missing required key {path[-1]!r}"
    if kind == "extra_forbidden":
        return _unknown_key(path[-1], _keys_at(model, path[:-1]))
    if kind in ("value_error", "assertion_error"):
        return user_message(str(context.get("error", detail["msg"])))
    if kind == "refused":
        return str(context["message"])
    if kind in EXPECTED:
        return f"input should be {EXPECTED[kind]}, got {show(given)}"
    if kind == "enum":
        return f"input should be {context['expected']}, got {show(given)}"
    if kind == "greater_than_equal":
        return f"input should be greater than or equal to {context['ge']}"
    if kind == "less_than_equal":
        return f"input should be less than or equal to {context['le']}"
    if kind == "too_short":
        minimum = context.get("min_length", 1)
        return (
            "must not be empty" if not context.get("actual_length") else f"must have at least {minimum} items"
        )
    return user_message(str(detail["msg"]))


def user_message(text: str) -> str:
    return text[0].lower() + text[1:] if text else "invalid value"


def _unknown_key(key: Any, allowed: list[str]) -> str:
    import difflib  # only a job file with a mistake pays for it

    text = str(key)
    hint = difflib.get_close_matches(text, allowed, n=1, cutoff=0.6)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    known = f"; allowed here: {', '.join(allowed)}" if allowed and not hint else ""
    return f"unknown key {shown_key(text)!r}{suggestion}{known}"


def _keys_at(model: type[pydantic.BaseModel], path: Path) -> list[str]:
    """The keys a job file may write in the mapping at ``path`` (followed from ``model`` down)."""
    current: Any = model
    for part in path:
        current = _inner(current, part)
        if current is None:
            return []
    if not (isinstance(current, type) and issubclass(current, pydantic.BaseModel)):
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def _inner(annotation: Any, part: str | int) -> Any:
    """What the value at ``part`` of a value of ``annotation`` is an instance of."""
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif args and type(None) in args and len(args) == 2:  # X | None
            annotation = next(arg for arg in args if arg is not type(None))
        else:
            break
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict and isinstance(part, str):
        return args[1]
    return None
