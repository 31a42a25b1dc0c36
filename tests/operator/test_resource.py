"""The PgQuartzJob model: what it refuses beyond the schema, and what it tells the operator to check."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from pgquartz.operator import resource
from tests.operator.test_crd import VALID_SPEC


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_SPEC)
    spec.update(changes)
    return spec


def test_a_target_naming_an_unknown_connection_is_refused() -> None:
    spec = spec_with(targets=[{"name": "node-a", "connections": {"replica": {"host": "a"}}}])
    with pytest.raises(
        pydantic.ValidationError, match=r"targets\[0\] \(node-a\): no connection named 'replica'"
    ):
        resource.PgQuartzJobSpec.model_validate(spec)


def test_repeated_target_names_are_refused() -> None:
    spec = spec_with(targets=[{"name": "node-a"}, {"name": "node-a"}])
    with pytest.raises(pydantic.ValidationError, match="names must be unique, repeated: node-a"):
        resource.PgQuartzJobSpec.model_validate(spec)


def test_a_bad_schedule_and_time_zone_are_refused_with_the_reason() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        resource.PgQuartzJobSpec.model_validate(spec_with(schedule="0 4 * * 8", timeZone="Moon/Tranquility"))
    messages = {detail["loc"][0]: detail["msg"] for detail in caught.value.errors()}
    assert "day of week field: '8' is above 6" in messages["schedule"]
    assert "unknown time zone 'Moon/Tranquility'" in messages["timeZone"]


def test_references_list_every_secret_key_and_the_scripts_config_map_once() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["standby"] = {
        "role": "standby",
        "params": {"host": "pg-ro"},
        "passwordSecretRef": {"name": "pg-maint", "key": "password"},  # the same key again
    }
    spec["scripts"] = {"configMapRef": {"name": "maintenance-scripts"}}
    references = resource.PgQuartzJobSpec.model_validate(spec).references()
    assert [ref.describe() for ref in references] == [
        "ConfigMap 'maintenance-scripts'",
        "Secret 'pg-maint' (key 'password')",
    ]
