"""Declared fields: the job model's types, defaults, aliases and checks, in one place.

A job file needs little of a validation library: a handful of value types,
defaults, camelCase aliases, a few bounds and checks across keys. Importing
pydantic and building models with it was half of a run's start-up (about 0.1 s
of 0.2 s), so the model declares its fields the way dataclasses do (annotations,
plain defaults and :func:`field`) on :class:`Model`, and this module derives the
rest from those declarations:

* :meth:`Model.from_data` validates plain data (what YAML gives) into frozen
  instances, collecting *every* problem with its key path, so the loader can
  name file and line for each (:class:`ModelError`);
* :meth:`Model.to_data` writes an instance back as plain data (the operator
  renders job files from it);
* :func:`json_schema` describes a model as JSON Schema, in the form pydantic gave it
  (the CRD, the docs and editors' completion are built from it).

A class is compiled (its annotations read) the first time it is validated, so
importing the model costs little more than defining its classes.
"""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeVar

from pgquartz.runner.model import kinds
from pgquartz.runner.model.kinds import INVALID, Custom, Hooks, Kind
from pgquartz.runner.model.problems import Path, Problem, format_path, shown_key

M = TypeVar("M", bound="Model")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a field that must be given."""


class ModelError(ValueError):
    """Data that does not fit the model; carries every problem, each with its key path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(_described(problem) for problem in problems))


def _described(problem: Problem) -> str:
    return f"{format_path(problem.path)}: {problem.message}" if problem.path else problem.message


class FieldSpec:
    """How one field is declared: its default, the key job files write, bounds and checks."""

    __slots__ = (
        "alias",
        "before",
        "check",
        "default",
        "default_factory",
        "description",
        "ge",
        "le",
        "min_length",
    )

    def __init__(
        self,
        default: Any = REQUIRED,
        *,
        default_factory: Callable[[], Any] | None = None,
        alias: str | None = None,
        description: str | None = None,
        ge: int | None = None,
        le: int | None = None,
        min_length: int | None = None,
        before: Callable[[Any], Any] | None = None,
        check: Callable[[Any], Any] | None = None,
    ) -> None:
        self.default = default
        self.default_factory = default_factory
        self.alias = alias
        self.description = description
        self.ge = ge
        self.le = le
        self.min_length = min_length
        self.before = before
        self.check = check


def field(
    default: Any = REQUIRED,
    *,
    default_factory: Callable[[], Any] | None = None,
    alias: str | None = None,
    description: str | None = None,
    ge: int | None = None,
    le: int | None = None,
    min_length: int | None = None,
    before: Callable[[Any], Any] | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare a field beyond its plain default.

    ``alias``: the key job files write (``batchMode`` for ``batch_mode``; the field's name
    is accepted too). ``ge``/``le``: bounds of a number; ``min_length``: of a list or
    mapping. ``before``: turns the raw value into what the type expects (YAML's ints into
    text, say); ``check``: receives the typed value and returns it, or raises
    :class:`ValueError` with a message for the user.
    """
    return FieldSpec(
        default,
        default_factory=default_factory,
        alias=alias,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        before=before,
        check=check,
    )


def _kind_of(annotation: Any, spec: FieldSpec) -> Kind:
    """The value type an annotation stands for (the few forms a job model uses)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner, *metadata = args
        custom = next((meta for meta in metadata if isinstance(meta, Custom)), None)
        kind = kinds.Parsed(custom) if custom is not None else _kind_of(inner, spec)
        for hooks in (meta for meta in metadata if isinstance(meta, Hooks)):
            kind = kinds.Hooked(kind, hooks)
        return kind
    if origin in (typing.Union, _UNION_TYPE):
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1 and len(args) == 2:
            return kinds.Optional(_kind_of(options[0], spec))
    if origin is list and len(args) == 1:
        return kinds.ListOf(_kind_of(args[0], _PLAIN), spec.min_length)
    if origin is dict and len(args) == 2 and args[0] is str:
        return kinds.MapOf(_kind_of(args[1], _PLAIN), spec.min_length)
    if annotation is str:
        return kinds.Text()
    if annotation is bool:
        return kinds.Flag()
    if annotation is int:
        return kinds.Whole(spec.ge, spec.le)
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        return kinds.Choice(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return kinds.Nested(typing.cast("type[kinds.NestedModel]", annotation))
    raise TypeError(f"a model field cannot be of type {annotation!r}")


_UNION_TYPE: Any = type(int | None)
_PLAIN = FieldSpec()


# --- models --------------------------------------------------------------------------------------


class Field:
    """One compiled field of a model."""

    __slots__ = ("default", "default_factory", "key", "kind", "name", "parse", "required", "spec")

    def __init__(self, name: str, kind: Kind, spec: FieldSpec) -> None:
        self.name = name
        self.key = spec.alias or name
        self.kind = kind
        self.spec = spec
        self.default = spec.default
        self.default_factory = spec.default_factory
        self.required = spec.default is REQUIRED and spec.default_factory is None
        self.parse: Callable[[Any, Path, list[Problem]], Any] = (
            kind.parse
            if spec.before is None and spec.check is None
            else functools.partial(kinds.hooked, kind, before=spec.before, check=spec.check)
        )
        """Validates a value as this field's (a :class:`ValueError` from it is the caller's to report)."""

    def default_value(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default


class Compiled:
    """A model class's fields, in declaration order (a base class's first), and its keys."""

    __slots__ = ("by_key", "defaults", "fields", "keys", "readings")

    READINGS_KEPT = 256

    def __init__(self, fields: list[Field]) -> None:
        self.fields = fields
        self.by_key = {field.key: field for field in fields} | {field.name: field for field in fields}
        self.keys = [field.key for field in fields]
        self.defaults = {
            field.name: field.default
            for field in fields
            if not field.required and field.default_factory is None
        }
        """The plain defaults, the start of every instance's values (most keys are left out)."""
        self.readings: dict[tuple[Any, ...], Reading] = {}
        """How a mapping with these keys, in this order, is read (only keys that are right: no more of
        them than there are fields, and at most :data:`READINGS_KEPT` sets, whatever a file holds)."""

    def reading(self, keys: tuple[Any, ...]) -> Reading | None:
        """How to read a mapping with ``keys``, worked out once for each set a job file uses (its
        thousands of commands are written with a few), or None if the keys themselves are wrong:
        unknown, missing, or a field given by both its key and its name."""
        try:
            return self.readings[keys]
        except KeyError:
            pass
        except TypeError:  # a key YAML made a list or a mapping of: not a key of any field
            return None
        if any(key not in self.by_key for key in keys):
            return None
        given = set(keys)
        present: list[tuple[Field, str]] = []
        made: list[Field] = []
        for field in self.fields:
            if field.key in given and field.name != field.key and field.name in given:
                return None
            if field.key in given or field.name in given:
                present.append((field, field.key if field.key in given else field.name))
            elif field.required:
                return None
            elif field.default_factory is not None:
                made.append(field)
        found = Reading(present, made)
        if len(self.readings) < self.READINGS_KEPT:
            self.readings[keys] = found
        return found


class Reading:
    """The fields a mapping gives, in declaration order, with the key each is given by, and the
    fields it leaves to their default factories: all that is left to do is validate values."""

    __slots__ = ("made", "present")

    def __init__(self, present: list[tuple[Field, str]], made: list[Field]) -> None:
        self.present = present
        self.made = made


@typing.dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
class Model:
    """Frozen data declared by annotated fields; built by validation only.

    ``Model(**values)`` validates like :meth:`from_data` (keys or field names), so an
    instance always satisfies its checks. A subclass may define ``_prepare`` (the raw
    mapping, before its fields are read) and ``_check`` (the built instance; raise
    :class:`ValueError`), as checks that span several fields.
    """

    __compiled__: ClassVar[Compiled | None] = None
    """Set by :func:`compiled` on each class itself (read from the class's own ``__dict__``)."""

    def __init__(self, **values: Any) -> None:
        built = type(self).from_data(values)
        object.__setattr__(self, "__dict__", built.__dict__)

    @classmethod
    def from_data(cls: type[M], data: Any) -> M:
        """Validate plain data (a mapping from a job file) into an instance, or raise :class:`ModelError`."""
        problems: list[Problem] = []
        built = _parse_model(cls, data, (), problems)
        if problems or isinstance(built, kinds.Invalid):
            raise ModelError(problems or [Problem((), "invalid")])
        return built

    @classmethod
    def parse_at(cls: type[M], data: Any, path: Path, problems: list[Problem]) -> M | kinds.Invalid:
        """Validate ``data`` found at ``path``, adding what is wrong with it to ``problems``."""
        return _parse_model(cls, data, path, problems)

    @classmethod
    def schema_into(cls, definitions: dict[str, Any]) -> dict[str, Any]:
        """The class's JSON Schema, its nested models and enums added to ``definitions``."""
        return model_schema(cls, definitions)

    def to_data(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        """Plain data, keys as job files write them (``exclude_defaults``: only what differs from them)."""
        data: dict[str, Any] = {}
        for field in compiled(type(self)).fields:
            value = self.__dict__[field.name]
            if exclude_defaults and value == field.default_value():
                continue
            data[field.key] = field.kind.dump(value, exclude_defaults)
        return data

    @classmethod
    def _prepare(cls, data: Mapping[Any, Any]) -> Mapping[Any, Any]:
        return data

    def _check(self) -> None:
        return None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be deleted")

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[field.name] for field in compiled(type(self)).fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Model)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), _hashable(self._values())))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{field.name}={self.__dict__[field.name]!r}" for field in compiled(type(self)).fields
        )
        return f"{type(self).__name__}({shown})"


def _hashable(value: Any) -> Any:
    """Lists and mappings as tuples, so equal instances hash equal (their fields hold lists)."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple((key, _hashable(item)) for key, item in value.items())
    return value


def compiled(cls: type[Model]) -> Compiled:
    """The fields of a model class, read from its annotations the first time they are needed."""
    found = cls.__dict__.get("__compiled__")
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = []
        for name, annotation in hints.items():
            if name.startswith("_") or typing.get_origin(annotation) is ClassVar:
                continue
            declared = _declared(cls, name)
            fields.append(Field(name, _kind_of(annotation, declared), declared))
        found = Compiled(fields)
        cls.__compiled__ = found
    return found


def _declared(cls: type[Model], name: str) -> FieldSpec:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            value = klass.__dict__[name]
            return value if isinstance(value, FieldSpec) else FieldSpec(value)
    return FieldSpec()


def _parse_model(cls: type[M], data: Any, path: Path, problems: list[Problem]) -> M | kinds.Invalid:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        return kinds.refuse(problems, path, "a mapping", data)
    model = compiled(cls)
    data = cls._prepare(data)
    before = len(problems)
    reading = model.reading(tuple(data))
    values: dict[str, Any] = model.defaults.copy()
    if reading is not None:  # the keys are right: only the values are left to check
        for field, key in reading.present:
            value = _parse_field(field, data[key], (*path, key), problems)
            if value is not INVALID:
                values[field.name] = value
        for field in reading.made:
            values[field.name] = field.default_factory()  # type: ignore[misc]
        return _built(cls, values, path, problems, valid=len(problems) == before)
    by_key = model.by_key
    for key in data:
        if key not in by_key:
            problems.append(Problem((*path, key), _unknown_key(key, model.keys)))
    for field in model.fields:
        key = field.key
        if key in data:
            if field.name != key and field.name in data:
                problems.append(
                    Problem((*path, field.name), f"{field.name!r} is {key!r} again: give it once")
                )
                continue
        elif field.name in data:
            key = field.name
        elif field.required:
            problems.append(Problem((*path, key), f"missing required key {key!r}"))
            continue
        else:
            if field.default_factory is not None:
                values[field.name] = field.default_factory()
            continue
        value = _parse_field(field, data[key], (*path, key), problems)
        if value is not INVALID:
            values[field.name] = value
    return _built(cls, values, path, problems, valid=len(problems) == before)


def _parse_field(field: Field, value: Any, path: Path, problems: list[Problem]) -> Any:
    try:
        return field.parse(value, path, problems)
    except ValueError as error:
        problems.append(Problem(path, kinds.user_message(error)))
        return INVALID


def _built(
    cls: type[M], values: dict[str, Any], path: Path, problems: list[Problem], *, valid: bool
) -> M | kinds.Invalid:
    """The instance of ``values`` if they are all valid and pass the class's own check."""
    if not valid:
        return INVALID
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    try:
        instance._check()
    except ValueError as error:
        problems.append(Problem(path, kinds.user_message(error)))
        return INVALID
    return instance


def _unknown_key(key: Any, allowed: list[str]) -> str:
    import difflib  # only a job file with a mistake pays for it

    text = str(key)
    hint = difflib.get_close_matches(text, allowed, n=1, cutoff=0.6)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    known = f"; allowed here: {', '.join(allowed)}" if allowed and not hint else ""
    return f"unknown key {shown_key(text)!r}{suggestion}{known}"


def subset(model: type[Model], names: tuple[str, ...], *, name: str, doc: str) -> type[Model]:
    """A model of some of ``model``'s fields, declared and checked as they are there."""
    hints = typing.get_type_hints(model, include_extras=True)
    namespace: dict[str, Any] = {
        "__doc__": doc,
        "__module__": model.__module__,
        "__annotations__": {key: hints[key] for key in names},
        **{key: _declared(model, key) for key in names},
    }
    return type(name, (Model,), namespace)


# --- JSON Schema -----------------------------------------------------------------------------------


def model_schema(model: type[Model], definitions: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema, its nested models and enums added to ``definitions``."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in compiled(model).fields:
        schema = field.kind.schema(definitions)
        if field.required:
            required.append(field.key)
        elif field.default_factory is None:
            schema["default"] = field.kind.dump(field.default, False)
        if field.spec.description:
            schema["description"] = field.spec.description
        if field.kind.titled:
            schema["title"] = field.key.replace("_", " ").title()
        properties[field.key] = schema
    result: dict[str, Any] = {"additionalProperties": False, "properties": properties, "type": "object"}
    doc = model.__dict__.get("__doc__")
    if doc:
        import inspect  # only where schemas are written: its import costs more than validating

        result["description"] = inspect.cleandoc(doc)
    if required:
        result["required"] = required
    result["title"] = model.__name__
    return result


def json_schema(model: type[Model]) -> dict[str, Any]:
    """A model's JSON Schema with its nested models as ``$defs``, keys sorted as pydantic sorts them."""
    definitions: dict[str, Any] = {}
    root = model_schema(model, definitions)
    if definitions:
        root["$defs"] = definitions
    sorted_root: dict[str, Any] = _sorted(root, None)
    return sorted_root


def _sorted(value: Any, parent_key: str | None) -> Any:
    """Every mapping's keys in order, except a model's properties (declaration order) and defaults."""
    if isinstance(value, dict):
        keys = value if parent_key in ("properties", "default") else sorted(value)
        return {key: _sorted(value[key], key) for key in keys}
    if isinstance(value, list):
        return [_sorted(item, parent_key) for item in value]
    return value
