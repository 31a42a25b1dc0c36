"""Records behave as frozen keyword-only dataclasses where the runner relies on them."""

from __future__ import annotations

import datetime
import itertools
from typing import ClassVar

import pytest

from pgquartz.runner.model import records

_counter = itertools.count()


class Base(records.Record):
    when: int = records.field(default_factory=lambda: next(_counter))
    LIMIT: ClassVar[int] = 3


class Child(Base):
    name: str
    size: int = 1
    note: str | None = None


def test_fields_are_in_declaration_order_a_parents_first() -> None:
    assert records.fields(Child) == ("when", "name", "size", "note")
    assert Child.LIMIT == 3  # a class variable is no field


def test_construction_by_keyword_with_defaults_and_factories() -> None:
    first, second = Child(name="a"), Child(name="b", size=5)
    assert (first.name, first.size, first.note) == ("a", 1, None)
    assert second.size == 5 and second.when == first.when + 1  # a factory runs per record
    assert Child(name="c", when=42).when == 42


def test_a_missing_or_unknown_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="missing 'name'"):
        Child()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected 'colour'"):
        Child(name="a", colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Child("a")  # type: ignore[misc]


def test_a_record_cannot_change() -> None:
    record = Child(name="a")
    with pytest.raises(AttributeError, match="immutable"):
        record.name = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del record.size
    assert record.name == "a"


def test_equality_and_hash_are_by_value_and_class() -> None:
    stamp = datetime.datetime(2026, 1, 1)
    one, same = Child(name="a", when=1, note=str(stamp)), Child(name="a", when=1, note=str(stamp))
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
    assert one != Child(name="b", when=1, note=str(stamp))

    class Other(Child):
        pass

    assert one != Other(name="a", when=1, note=str(stamp))


def test_repr_shows_fields_in_order() -> None:
    assert repr(Child(name="a", when=7)) == "Child(when=7, name='a', size=1, note=None)"


def test_replace_makes_a_changed_copy() -> None:
    record = Child(name="a", when=1)
    changed = record.replace(size=9)
    assert (changed.name, changed.size, changed.when) == ("a", 9, 1)
    assert record.size == 1
    with pytest.raises(TypeError, match="unexpected"):
        record.replace(colour="red")


class Node(records.Record, kw_only=False):
    name: str
    weight: int = 0
    parsed: object = records.field(default=None, compare=False, repr=False)


class Other(records.Record, kw_only=False):
    name: str


def test_a_positional_record_takes_values_in_field_order_and_by_keyword() -> None:
    assert Node("a", 2) == Node(name="a", weight=2) == Node("a", weight=2)
    assert Node("a").weight == 0
    with pytest.raises(TypeError, match="twice"):
        Node("a", name="b")
    with pytest.raises(TypeError, match="takes 3 values, 4 given"):
        Node("a", 1, None, "extra")
    with pytest.raises(TypeError, match="keyword arguments only"):
        Child("a")  # type: ignore[misc]


def test_records_of_different_classes_with_equal_values_differ() -> None:
    assert Node("index") != Other("index")
    assert hash(Node("index")) != hash(Other("index"))


def test_a_field_left_out_of_comparison_and_repr() -> None:
    first, second = Node("a", parsed=object()), Node("a", parsed=object())
    assert first == second and hash(first) == hash(second)
    assert repr(first) == "Node(name='a', weight=0)"
    assert first.replace(weight=3).parsed is first.parsed


class _Often(records.Record):
    name: str
    size: int = 0
    tags: tuple[str, ...] = records.field(default_factory=tuple)


class _OftenChild(_Often):
    colour: str = "red"


def test_a_record_made_often_gets_its_own_init_and_keeps_every_behaviour() -> None:
    made = [_Often(name=str(n), size=n) for n in range(records.COMPILE_AFTER + 5)]
    assert _Often.__init__ is not records.Record.__init__  # compiled once made often
    assert made[-1] == _Often(name=str(len(made) - 1), size=len(made) - 1, tags=())
    assert _Often(name="a").size == 0
    assert _Often(name="a").tags == ()
    with pytest.raises(TypeError, match="missing 'name'"):
        _Often(size=1)
    with pytest.raises(TypeError, match="unexpected 'colour'"):
        _Often(name="a", colour="red")
    with pytest.raises(TypeError, match="keyword arguments only"):
        _Often("a")  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        made[0].size = 3  # type: ignore[misc]
    child = _OftenChild(name="b")  # a subclass never takes its parent's compiled init
    assert (child.name, child.size, child.colour) == ("b", 0, "red")
    assert repr(child) == "_OftenChild(name='b', size=0, tags=(), colour='red')"
