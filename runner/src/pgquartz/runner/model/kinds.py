"""The value types a model field can have: how each is validated, written back and described.

:mod:`~pgquartz.runner.model.fields` reads a field's annotation (``str``,
``list[Command]``, ``Duration | None``) into one of these. Each validates a raw
value from a job file, recording a :class:`Problem` at its key path rather
than raising, so one pass finds every mistake; a nested model is validated by
its own class (:class:`NestedModel`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from pgquartz.runner.model.problems import Path, Problem


class Invalid:
    """A value that failed validation (its problems are already recorded)."""


INVALID: Final = Invalid()
"""What a value type returns for a value it refused (the problem is recorded already)."""


class Hooks:
    """``Annotated`` metadata: a ``before`` and a ``check`` that go with a type wherever it is used."""

    __slots__ = ("before", "check")

    def __init__(
        self, *, before: Callable[[Any], Any] | None = None, check: Callable[[Any], Any] | None = None
    ) -> None:
        self.before = before
        self.check = check


class Custom:
    """``Annotated`` metadata: a value type of its own (a duration, a size) with its parser.

    ``parse`` raises :class:`ValueError` with the user's message; ``dump`` writes the value
    as job files write it; ``schema`` is its JSON Schema; ``titled``: whether a field of this
    type gets a ``title`` in the schema (as pydantic gave one to plain values, not to classes).
    """

    __slots__ = ("dump", "parse", "schema", "titled")

    def __init__(
        self,
        parse: Callable[[Any], Any],
        *,
        dump: Callable[[Any], Any],
        schema: dict[str, Any],
        titled: bool = True,
    ) -> None:
        self.parse = parse
        self.dump = dump
        self.schema = schema
        self.titled = titled


def show(value: Any) -> str:
    """A value as a message quotes it: short, and never a whole mapping."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Kind:
    """A value type: how it is validated, written back and described."""

    titled = True

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        raise NotImplementedError

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return value

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def reference(
    name: str, definitions: dict[str, Any], describe: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A ``$ref`` to ``name`` in ``definitions``, described there by ``describe()`` the first time."""
    if name not in definitions:
        definitions[name] = {}  # a placeholder while it is described (a model may hold itself)
        definitions[name] = describe()
    return {"$ref": f"#/$defs/{name}"}


def refuse(problems: list[Problem], path: Path, expected: str, value: Any) -> Invalid:
    problems.append(Problem(path, f"input should be {expected}, got {show(value)}"))
    return INVALID


class Text(Kind):
    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        return value if isinstance(value, str) else refuse(problems, path, "a valid string", value)

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string"}


_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


class Flag(Kind):
    """A boolean: YAML's true/false, or the words and 0/1 that mean one."""

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return refuse(problems, path, "a valid boolean", value)

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return {"type": "boolean"}


_WHOLE_TEXT = re.compile(r"^\s*[+-]?[0-9]+\s*$")


class Whole(Kind):
    """An integer (a float without a fraction or a numeric string is one too; a boolean is not)."""

    def __init__(self, ge: int | None, le: int | None) -> None:
        self.ge = ge
        self.le = le

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and _WHOLE_TEXT.match(value)
        ):
            number = int(value)
        if number is None:
            return refuse(problems, path, "a valid integer", value)
        if self.ge is not None and number < self.ge:
            problems.append(Problem(path, f"input should be greater than or equal to {self.ge}"))
            return INVALID
        if self.le is not None and number > self.le:
            problems.append(Problem(path, f"input should be less than or equal to {self.le}"))
            return INVALID
        return number

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.ge is not None:
            schema["minimum"] = self.ge
        if self.le is not None:
            schema["maximum"] = self.le
        return schema


class Choice(Kind):
    """One of a string enum's values."""

    titled = False

    def __init__(self, enum_type: type[enum.StrEnum]) -> None:
        self.enum_type = enum_type
        self.by_value = {member.value: member for member in enum_type}

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        if isinstance(value, self.enum_type):
            return value
        member = self.by_value.get(value) if isinstance(value, str) else None
        if member is None:
            quoted = [repr(text) for text in self.by_value]
            options = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
            return refuse(problems, path, options, value)
        return member

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return value.value

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return reference(self.enum_type.__name__, definitions, self._definition)

    def _definition(self) -> dict[str, Any]:
        name = self.enum_type.__name__
        definition: dict[str, Any] = {"enum": list(self.by_value), "title": name, "type": "string"}
        doc = self.enum_type.__dict__.get("__doc__")
        if doc:
            import inspect  # only where schemas are written: its import costs more than validating

            definition["description"] = inspect.cleandoc(doc)
        return definition


class Optional(Kind):
    """A value that may also be null."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.titled = inner.titled

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        return None if value is None else self.inner.parse(value, path, problems)

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return None if value is None else self.inner.dump(value, exclude_defaults)

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [self.inner.schema(definitions), {"type": "null"}]}


def _empty(problems: list[Problem], path: Path, value: Any, min_length: int | None) -> bool:
    if min_length is not None and len(value) < min_length:
        message = "must not be empty" if not value else f"must have at least {min_length} items"
        problems.append(Problem(path, message))
        return True
    return False


class ListOf(Kind):
    def __init__(self, item: Kind, min_length: int | None) -> None:
        self.item = item
        self.min_length = min_length

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        if not isinstance(value, list | tuple):
            return refuse(problems, path, "a list", value)
        if _empty(problems, path, value, self.min_length):
            return INVALID
        items = [self.item.parse(item, (*path, index), problems) for index, item in enumerate(value)]
        return INVALID if any(item is INVALID for item in items) else items

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return [self.item.dump(item, exclude_defaults) for item in value]

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        schema: dict[str, Any] = {"items": self.item.schema(definitions), "type": "array"}
        if self.min_length is not None:
            schema["minItems"] = self.min_length
        return schema


class MapOf(Kind):
    """A mapping from text keys (names of steps, connections, …) to values."""

    def __init__(self, value: Kind, min_length: int | None) -> None:
        self.value = value
        self.min_length = min_length

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        if not isinstance(value, Mapping):
            return refuse(problems, path, "a mapping", value)
        if _empty(problems, path, value, self.min_length):
            return INVALID
        result: dict[str, Any] = {}
        valid = True
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(Problem((*path, key), f"a key should be a string, got {show(key)}"))
                valid = False
                continue
            parsed = self.value.parse(item, (*path, key), problems)
            valid = valid and parsed is not INVALID
            result[key] = parsed
        return result if valid else INVALID

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return {key: self.value.dump(item, exclude_defaults) for key, item in value.items()}

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        schema: dict[str, Any] = {"additionalProperties": self.value.schema(definitions), "type": "object"}
        if self.min_length is not None:
            schema["minProperties"] = self.min_length
        return schema


class NestedModel(Protocol):
    """What a value type needs of a model class (:class:`~pgquartz.runner.model.fields.Model`)."""

    __name__: str

    @classmethod
    def parse_at(cls, data: Any, path: Path, problems: list[Problem]) -> Any: ...

    @classmethod
    def schema_into(cls, definitions: dict[str, Any]) -> dict[str, Any]: ...

    def to_data(self, *, exclude_defaults: bool = False) -> dict[str, Any]: ...


class Nested(Kind):
    """A mapping validated as a model of its own."""

    titled = False

    def __init__(self, model: type[NestedModel]) -> None:
        self.model = model

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        return self.model.parse_at(value, path, problems)

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return value.to_data(exclude_defaults=exclude_defaults)

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return reference(self.model.__name__, definitions, lambda: self.model.schema_into(definitions))


class Parsed(Kind):
    """A value type of its own (:class:`Custom`)."""

    def __init__(self, custom: Custom) -> None:
        self.custom = custom
        self.titled = custom.titled

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        try:
            return self.custom.parse(value)
        except ValueError as error:
            problems.append(Problem(path, user_message(error)))
            return INVALID

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return self.custom.dump(value)

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.schema)


class Hooked(Kind):
    """A type with a ``before`` and a ``check`` of its own (:class:`Hooks`)."""

    def __init__(self, inner: Kind, hooks: Hooks) -> None:
        self.inner = inner
        self.hooks = hooks
        self.titled = inner.titled

    def parse(self, value: Any, path: Path, problems: list[Problem]) -> Any:
        return hooked(self.inner, value, path, problems, before=self.hooks.before, check=self.hooks.check)

    def dump(self, value: Any, exclude_defaults: bool) -> Any:
        return self.inner.dump(value, exclude_defaults)

    def schema(self, definitions: dict[str, Any]) -> dict[str, Any]:
        return self.inner.schema(definitions)


def user_message(error: ValueError) -> str:
    message = str(error)
    return message[0].lower() + message[1:] if message else "invalid value"


def hooked(
    kind: Kind,
    value: Any,
    path: Path,
    problems: list[Problem],
    *,
    before: Callable[[Any], Any] | None,
    check: Callable[[Any], Any] | None,
) -> Any:
    """Validate ``value`` as ``kind``, with a ``before`` and a ``check`` around it."""
    try:
        if before is not None:
            value = before(value)
        value = kind.parse(value, path, problems)
        if check is not None and value is not INVALID:
            value = check(value)
    except ValueError as error:
        problems.append(Problem(path, user_message(error)))
        return INVALID
    return value
