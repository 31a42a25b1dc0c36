"""Quantities compare as the numbers they stand for."""

from __future__ import annotations

import decimal

import pytest

from pgquartz.operator import quantities


@pytest.mark.parametrize(
    ("left", "right"),
    [("1000m", "1"), ("1024Mi", "1Gi"), ("0.5", "500m"), (2, "2"), ("1e3", "1k"), ("1.5Gi", "1536Mi")],
)
def test_the_same_quantity_written_two_ways(left: str | int, right: str) -> None:
    assert quantities.same(left, right)


@pytest.mark.parametrize(("left", "right"), [("1", "1001m"), ("1Gi", "1G"), ("lots", "1"), ("1", None)])
def test_different_quantities(left: object, right: object) -> None:
    assert not quantities.same(left, right)


def test_values() -> None:
    assert quantities.value("250m") == decimal.Decimal("0.25")
    assert quantities.value("2Ki") == 2048
    assert quantities.value("x") is None
