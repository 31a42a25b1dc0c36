"""Resource quantities as numbers: ``1000m`` and ``1`` are the same CPU, ``1024Mi`` and ``1Gi`` the same.

An API server stores a quantity in its canonical form (``1000m`` comes back as ``1``), so comparing the
text a user wrote with what the cluster holds would see drift that is not there. :func:`value` parses
a quantity (``resource.Quantity``'s grammar) into an exact number; :func:`same` compares two.
"""

from __future__ import annotations

import decimal
import re

_SCALES: dict[str, str | int] = {
    "": "1", "n": "1e-9", "u": "1e-6", "m": "1e-3",
    "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12", "P": "1e15", "E": "1e18",
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_SUFFIXES = {suffix: decimal.Decimal(scale) for suffix, scale in _SCALES.items()}
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([numkMGTPE]|[KMGTPE]i)|[eE]([+-]?[0-9]+))?$"
)


def value(text: str | int | float) -> decimal.Decimal | None:
    """The number a quantity stands for, or None if ``text`` is not a quantity."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return decimal.Decimal(str(text))
    match = _QUANTITY.match(str(text))
    if match is None:
        return None
    number, suffix, exponent = match.groups()
    scale = decimal.Decimal(10) ** int(exponent) if exponent else _SUFFIXES[suffix or ""]
    return decimal.Decimal(number) * scale


def same(left: object, right: object) -> bool:
    """Whether two quantities stand for the same number (text that is no quantity: equal text)."""
    if left == right:
        return True
    if not isinstance(left, str | int) or not isinstance(right, str | int):
        return False
    a, b = value(left), value(right)
    return a is not None and b is not None and a == b
