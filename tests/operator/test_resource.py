"""The PgQuartzJob model: what it refuses beyond the schema, and what it tells the operator to check."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from pgquartz.operator import resource
from pgquartz.runner.model.base import problems_of
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


def test_a_bad_job_body_is_refused_problem_by_problem_under_spec_job() -> None:
    job = {
        "steps": {"s": {"commands": [{"inline": "x", "retry": {"on": ["deadlock_detection"]}}, {}]}},
        "parallel": 0,
        "etcdConfig": {},  # a job-file key the resource replaces with spec.lock
    }
    with pytest.raises(pydantic.ValidationError) as caught:
        resource.PgQuartzJobSpec.model_validate(spec_with(job=job))
    found = {problem.path: problem.message for problem in problems_of(caught.value, resource.PgQuartzJobSpec)}
    assert set(found) == {
        ("job", "steps", "s", "commands", 0, "retry", "on"),
        ("job", "steps", "s", "commands", 1),
        ("job", "parallel"),
        ("job", "etcdConfig"),
    }
    assert "did you mean 'deadlock_detected'" in found[("job", "steps", "s", "commands", 0, "retry", "on")]
    assert found[("job", "parallel")] == "input should be greater than or equal to 1"
    assert found[("job", "etcdConfig")].startswith("unknown key 'etcdConfig'; allowed here: steps, checks")


def test_the_job_body_and_a_retry_are_the_runners_models_and_dump_as_job_files_write_them() -> None:
    spec = spec_with(
        connections={"primary": {"params": {"host": "db"}, "retry": {"on": ["40001"], "maxBackoff": "90s"}}}
    )
    parsed = resource.PgQuartzJobSpec.model_validate(spec)
    assert parsed.job.to_data(exclude_defaults=True)["timeout"] == "1h"
    retry = parsed.connections["primary"].retry
    assert retry is not None and retry.retries_sqlstate("40001")
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["job"]["steps"]["vacuum"]["matrix"] == {"db": ["app"]}
    assert (
        dumped["connections"]["primary"]["retry"] | {"on": ["40001"], "maxBackoff": "1m30s"}
        == (dumped["connections"]["primary"]["retry"])
    )
    assert resource.PgQuartzJobSpec.model_validate(dumped) == parsed


def test_a_clusters_connection_takes_no_host_or_port_of_its_own() -> None:
    connection = {"cluster": {"kind": "CloudNativePG", "name": "main"}, "params": {"host": "x", "port": "1"}}
    with pytest.raises(pydantic.ValidationError) as caught:
        resource.PgQuartzJobSpec.model_validate(spec_with(connections={"primary": connection}))
    [problem] = problems_of(caught.value, resource.PgQuartzJobSpec)
    assert problem.path == ("connections", "primary")
    assert problem.message == "params: host, port are the cluster's: leave them out"
    unknown = {"cluster": {"kind": "Percona", "name": "main"}}
    with pytest.raises(pydantic.ValidationError, match="CloudNativePG"):
        resource.PgQuartzJobSpec.model_validate(spec_with(connections={"primary": unknown}))


def test_the_clusters_a_spec_names_are_references_it_waits_for() -> None:
    connection = {"role": "primary", "cluster": {"kind": "Zalando", "name": "acid-main"}}
    spec = resource.PgQuartzJobSpec.model_validate(spec_with(connections={"primary": connection}))
    assert [reference.describe() for reference in spec.references()] == [
        "Secret 'postgres.acid-main.credentials.postgresql.acid.zalan.do' (key 'password')",
        "Zalando cluster 'acid-main'",
    ]


def test_targets_from_needs_a_connection_on_that_cluster_and_no_targets_list() -> None:
    elsewhere = {"primary": {"params": {"host": "db"}}}
    cluster = {"kind": "CloudNativePG", "name": "main"}
    with pytest.raises(pydantic.ValidationError, match="no connection names CloudNativePG cluster 'main'"):
        resource.PgQuartzJobSpec.model_validate(
            spec_with(connections=elsewhere, targetsFrom={"cluster": cluster})
        )
    on_it = {"primary": {"cluster": cluster}}
    both = spec_with(connections=on_it, targetsFrom={"cluster": cluster}, targets=[{"name": "a"}])
    with pytest.raises(pydantic.ValidationError, match="targets or targetsFrom, not both"):
        resource.PgQuartzJobSpec.model_validate(both)
