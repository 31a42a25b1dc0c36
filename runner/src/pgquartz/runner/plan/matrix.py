"""Matrix expansion: argument lists → instances, as PgQuartz does it.

``{arg1: [1, 2], arg2: [A, B]}`` becomes four instances in a stable order: the
cartesian product in the order the job file lists arguments and values
(``1,A``, ``1,B``, ``2,A``, ``2,B``). No matrix means one instance without
arguments.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

Args = dict[str, str]


MAX_INSTANCES = 10_000
"""Instances a job may have by default (``PGQUARTZ_MAX_INSTANCES`` for the runner and the operator)."""


def expand(matrix: Mapping[str, Sequence[str]]) -> list[Args]:
    return list(iter_instances(matrix))


def iter_instances(matrix: Mapping[str, Sequence[str]]) -> Iterator[Args]:
    names = list(matrix)
    for values in itertools.product(*(matrix[name] for name in names)):
        yield dict(zip(names, values, strict=True))


def count(matrix: Mapping[str, Sequence[str]]) -> int:
    total = 1
    for values in matrix.values():
        total *= len(values)
    return total


def label(args: Mapping[str, str]) -> str:
    """A short name for an instance: ``arg1=1,arg2=A`` (empty without a matrix)."""
    if not args:
        return ""  # no matrix: most jobs, for every event
    return ",".join(f"{name}={value}" for name, value in args.items())


def environment(args: Mapping[str, str]) -> dict[str, str]:
    """The variables a shell command gets: ``arg1`` → ``PGQ_INSTANCE_ARG1``."""
    return {f"PGQ_INSTANCE_{name.upper()}": value for name, value in args.items()}
