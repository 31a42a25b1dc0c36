"""Immutable keyword-built records, declared like dataclasses, without their cost at start-up.

``@dataclasses.dataclass`` writes and compiles ``__init__``, ``__repr__``,
``__eq__`` and ``__hash__`` for every class it decorates: on Python 3.11 about
half a millisecond a class, paid by every run before its first command (the
runner's events alone were 7 ms of a 0.1 s start). A :class:`Record` subclass
is read once when it is defined (its annotations, in order, parents' first,
and its class-level defaults) and served by the same few generic methods, so
defining one costs a few microseconds. What it keeps of a frozen, keyword-only
dataclass: construction by keyword with required fields checked, defaults and
default factories (:func:`field`, which can also leave a field out of equality
or the repr), no assignment after construction, equality and hashing by value
(of the same class), a repr in field order, :meth:`Record.replace`, and with
``kw_only=False`` in the class statement construction by position. Annotations
are never evaluated (``from __future__ import annotations`` keeps them text), so
a record may name types it does not import.

A generic ``__init__`` costs about twice what a written-out one does (3 µs
against 1.4 µs here), and a run makes a few records per command (its events,
its result): a keyword-only class made :data:`COMPILE_AFTER` times gets an
``__init__`` of its own, written out like a dataclass's, then. Its errors stay
the generic one's (it hands any call it does not expect to it), and only the
classes a run makes often pay for compiling one.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, ClassVar

_MISSING: Any = object()

COMPILE_AFTER = 64
"""Records of a keyword-only class made before it gets an ``__init__`` of its own."""

_made: dict[type[Record], int] = {}
"""Records made per class, until its ``__init__`` is compiled."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class _Options:
    """A field that is left out of equality, hashing or the repr."""

    __slots__ = ("compare", "default", "repr")

    def __init__(self, default: Any, *, compare: bool, repr: bool) -> None:
        self.default = default
        self.compare = compare
        self.repr = repr


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    compare: bool = True,
    repr: bool = True,
) -> Any:
    """A field's default (``default``) or a function making one per record (``default_factory``);
    ``compare=False`` leaves it out of equality and hashing, ``repr=False`` out of the repr."""
    value = _Factory(default_factory) if default_factory is not None else default
    if compare and repr:
        return value
    return _Options(value, compare=compare, repr=repr)


@typing.dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
class Record:
    """Subclass it, annotate the fields; construct with keywords (and by position too, in field
    order, when the class says ``kw_only=False``)."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _field_set: ClassVar[frozenset[str]] = frozenset()
    _defaults: ClassVar[dict[str, Any]] = {}
    _factories: ClassVar[dict[str, Callable[[], Any]]] = {}
    _uncompared: ClassVar[frozenset[str]] = frozenset()
    _hidden: ClassVar[frozenset[str]] = frozenset()
    _compared: ClassVar[tuple[str, ...]] = ()
    _shown: ClassVar[tuple[str, ...]] = ()
    _positional: ClassVar[bool] = False

    def __init_subclass__(cls, kw_only: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._positional = not kw_only
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        factories = dict(cls._factories)
        uncompared, hidden = set(cls._uncompared), set(cls._hidden)
        # This class's own annotations, as written (what inspect.get_annotations returns for a
        # class, without importing inspect: with ast and dis, a third of a run's imports).
        own: dict[str, Any] = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        for name, annotation in own.items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if name not in fields:
                fields.append(name)
            value = cls.__dict__.get(name, _MISSING)
            defaults.pop(name, None)
            factories.pop(name, None)
            uncompared.discard(name)
            hidden.discard(name)
            if isinstance(value, _Options):
                if not value.compare:
                    uncompared.add(name)
                if not value.repr:
                    hidden.add(name)
                if value.default is _MISSING:
                    delattr(cls, name)
                value = value.default
            if isinstance(value, _Factory):
                factories[name] = value.make
            elif value is not _MISSING:
                defaults[name] = value
            if value is not _MISSING:
                delattr(cls, name)  # read through __dict__ only, as the instance's own value
        cls._fields = tuple(fields)
        cls._field_set = frozenset(fields)
        cls._defaults = defaults
        cls._factories = factories
        cls._uncompared, cls._hidden = frozenset(uncompared), frozenset(hidden)
        cls._compared = tuple(name for name in fields if name not in uncompared)
        cls._shown = tuple(name for name in fields if name not in hidden)
        if "__init__" not in cls.__dict__:  # its own, never a parent's compiled one
            cls.__init__ = _generic_init  # type: ignore[method-assign]

    def __init__(self, *by_position: Any, **values: Any) -> None:
        cls = type(self)
        if not cls._positional:
            made = _made[cls] = _made.get(cls, 0) + 1
            if made == COMPILE_AFTER and cls.__dict__.get("__init__") is _generic_init:
                cls.__init__ = _compiled_init(cls)  # type: ignore[method-assign]
        if by_position:
            values = cls._by_position(by_position, values)
        state = self.__dict__
        state.update(cls._defaults)
        for name, make in cls._factories.items():
            if name not in values:
                state[name] = make()
        state.update(values)
        if state.keys() != cls._field_set:  # one comparison on the way every record is made
            state.clear()
            cls._refuse(values)

    @classmethod
    def _by_position(cls, given: tuple[Any, ...], values: dict[str, Any]) -> dict[str, Any]:
        if not cls._positional:
            raise TypeError(f"{cls.__name__}() takes keyword arguments only")
        if len(given) > len(cls._fields):
            raise TypeError(f"{cls.__name__}() takes {len(cls._fields)} values, {len(given)} given")
        named = dict(zip(cls._fields, given, strict=False))
        twice = sorted(named.keys() & values.keys())
        if twice:
            raise TypeError(f"{cls.__name__}() got {', '.join(map(repr, twice))} twice")
        return named | values

    @classmethod
    def _refuse(cls, values: dict[str, Any]) -> None:
        missing = sorted(cls._field_set - cls._defaults.keys() - cls._factories.keys() - values.keys())
        if missing:
            raise TypeError(f"{cls.__name__}() is missing {', '.join(map(repr, missing))}")
        unknown = sorted(values.keys() - cls._field_set)
        raise TypeError(f"{cls.__name__}() got unexpected {', '.join(map(repr, unknown))}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def _values(self) -> tuple[Any, ...]:
        state = self.__dict__
        return tuple(state[name] for name in type(self)._compared)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        state = self.__dict__
        shown = ", ".join(f"{name}={state[name]!r}" for name in type(self)._shown)
        return f"{type(self).__name__}({shown})"

    def replace(self, **changes: Any) -> typing.Self:
        """A copy with ``changes``."""
        state = self.__dict__
        return type(self)(**{name: state[name] for name in type(self)._fields} | changes)


def fields(record: Record | type[Record]) -> tuple[str, ...]:
    """The names of a record's fields, in declaration order (a parent's first)."""
    return record._fields


_generic_init = Record.__init__


def _compiled_init(cls: type[Record]) -> Callable[..., None]:
    """An ``__init__`` for ``cls`` that names its fields, as a dataclass's does.

    Any call it does not expect (by position, an unknown or a missing keyword) goes to the
    generic ``__init__``, for its errors: only well-formed calls take the short way. Its own
    names start with ``_r_``; a class with a field named so keeps the generic one.
    """
    fields = cls._fields
    if any(name.startswith("_r_") for name in fields):
        return _generic_init
    required = [name for name in fields if name not in cls._defaults and name not in cls._factories]
    parameters = "".join(
        f", {name}=_r_default_{name}" if name in cls._defaults else f", {name}=_r_MISSING" for name in fields
    )
    given = "".join(f"({name!r}, {name}), " for name in fields)
    missing = [f"{name} is _r_MISSING" for name in required]
    unexpected = " or ".join(["_r_by_position", "_r_unknown", *missing])
    lines = [
        f"def __init__(_r_self, *_r_by_position{parameters}, **_r_unknown):",
        f"    if {unexpected}:",
        f"        _r_given = {{key: value for key, value in ({given}) if value is not _r_MISSING}}",
        "        return _r_generic(_r_self, *_r_by_position, **_r_given, **_r_unknown)",
        "    _r_state = _r_self.__dict__",
    ]
    for name in fields:
        if name in cls._factories:
            lines.append(f"    _r_state[{name!r}] = _r_make_{name}() if {name} is _r_MISSING else {name}")
        else:
            lines.append(f"    _r_state[{name!r}] = {name}")
    namespace: dict[str, Any] = {"_r_MISSING": _MISSING, "_r_generic": _generic_init}
    namespace |= {f"_r_default_{name}": value for name, value in cls._defaults.items()}
    namespace |= {f"_r_make_{name}": make for name, make in cls._factories.items()}
    exec("\n".join(lines), namespace)  # text made of the class's own field names
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
