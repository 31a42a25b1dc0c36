"""YAML values get the types YAML 1.1 gives them, however many of them a job file holds."""

from __future__ import annotations

import datetime

import yaml

from pgquartz.runner.loader import yamlmarks


def test_plain_and_quoted_scalars_get_the_safe_loaders_types() -> None:
    text = (
        "a: [1, '1', 1.5, yes, 'yes', on, null, ~, '', 2026-12-01, 0x1f, .inf, select 1, 1_000]\n"
        "b: [1, '1', 1.5, yes, 'yes', on, null, ~, '', 2026-12-01, 0x1f, .inf, select 1, 1_000]\n"
    )
    data = yamlmarks.load(text).data
    assert data == yaml.safe_load(text)
    assert data["a"][:4] == [1, "1", 1.5, True] and data["b"][9] == datetime.date(2026, 12, 1)


def test_types_stay_right_past_the_number_of_remembered_plain_values() -> None:
    count = yamlmarks._Loader._PLAIN_TAGS_KEPT + 500
    text = "v: [" + ", ".join(f"x{i}, {i}, {i}.5, true" for i in range(count)) + "]\n"
    values = yamlmarks.load(text).data["v"]
    assert values[-4:] == [f"x{count - 1}", count - 1, count - 0.5, True]
    assert values == yaml.safe_load(text)["v"]
