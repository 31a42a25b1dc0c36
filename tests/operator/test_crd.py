"""The PgQuartzJob CRD: generated from the runner's model, structural, valid, and up to date."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import cel
import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml

from pgquartz.operator import crd, resource
from tests.support.apiserver import validation

CRD_FILE = pathlib.Path(__file__).resolve().parents[2] / "crds" / crd.FILE_NAME


def test_the_committed_crd_is_not_stale() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        "run: python -m pgquartz.operator.crd > crds/" + crd.FILE_NAME
    )


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), "1.37.0", strict=True)


def _walk(node: dict[str, Any], path: str = "") -> list[str]:
    """Structural-schema rules the API server enforces (and kubernetes-validate does not)."""
    problems = []
    if (
        "type" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not node.get("x-kubernetes-int-or-string")
    ):
        problems.append(f"{path or '/'}: no type")
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "definitions"):
        if forbidden in node and not (forbidden == "anyOf" and node.get("x-kubernetes-int-or-string")):
            problems.append(f"{path}: {forbidden}")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false")
    if "additionalProperties" in node and "properties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for name, sub in node.get("properties", {}).items():
        problems += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


def test_the_schema_is_structural() -> None:
    schema = crd.definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_spec_job_is_the_job_files_schema() -> None:
    job = crd.spec_schema()["properties"]["job"]
    assert set(job["properties"]) == {
        "steps",
        "checks",
        "parallel",
        "timeout",
        "debug",
        "runOnRoleError",
        "gates",
    }
    step = job["properties"]["steps"]["additionalProperties"]
    assert {"commands", "depends", "when", "matrix", "gates"} <= set(step["properties"])
    assert job["properties"]["parallel"]["minimum"] == 1 and job["properties"]["parallel"]["default"] == 1
    assert "pattern" in job["properties"]["timeout"]


def _as_json_schema(node: Any) -> Any:
    """The CRD's schema as JSON Schema, flagging what pruning would drop."""
    return validation.as_json_schema(node, strict_fields=True)


VALID_SPEC = {
    "schedule": "15 23 * * *",
    "timeZone": "Etc/UTC",
    "job": {
        "parallel": 2,
        "timeout": "1h",
        "steps": {
            "vacuum": {
                "commands": [{"type": "primary", "inline": "vacuum analyze"}],
                "matrix": {"db": ["app"]},
            }
        },
        "checks": [{"type": "primary", "inline": "select 1", "expected": "{?column?}={1}"}],
    },
    "connections": {
        "primary": {
            "role": "primary",
            "params": {"host": "pg-rw", "dbname": "app", "user": "maint"},
            "passwordSecretRef": {"name": "pg-maint", "key": "password"},
        }
    },
    "lock": {"ttl": "1m"},
}


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_as_json_schema(crd.spec_schema()))


def test_a_realistic_spec_is_accepted() -> None:
    assert list(_validator().iter_errors(VALID_SPEC)) == []


def test_gates_retries_and_failover_policies_are_accepted_by_the_schema_and_the_model() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"] |= {"onFailover": "continue", "retry": {"on": ["40001"], "attempts": 4}}
    spec["job"]["gates"] = {
        "wait": "10m",
        "onTimeout": "fail",
        "require": [{"maxReplicationLag": "64MB"}, {"maxReplicationLag": 1048576}, {"noBackupRunning": True}],
    }
    spec["job"]["steps"]["vacuum"]["commands"][0]["retry"] = {"on": ["deadlock_detected"], "backoff": "2s"}
    assert list(_validator().iter_errors(spec)) == []
    parsed = resource.PgQuartzJobSpec.model_validate(spec)
    assert parsed.connections["primary"].retry is not None and parsed.job.gates is not None
    spec["job"]["gates"]["onTimeout"] = "maybe"
    assert [error.message for error in _validator().iter_errors(spec)]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda s: s.pop("schedule"), "schedule"),
        (lambda s: s["job"].update(parallel=0), "parallel"),
        (lambda s: s["job"].update(timeout="soon"), "timeout"),
        (lambda s: s["connections"]["primary"].update(role="leader"), "role"),
        (lambda s: s.update(concurrencyPolicy="Sometimes"), "concurrencyPolicy"),
        (lambda s: s["job"]["steps"]["vacuum"].update(depend=["x"]), "depend"),
        (lambda s: s["job"].update(connections={}), "connections"),
    ],
)
def test_invalid_specs_are_rejected_by_the_schema(change: Any, where: str) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    change(spec)
    errors = list(_validator().iter_errors(spec))
    assert errors, f"{where} should be rejected"
    assert any(where in error.message or where in "/".join(map(str, error.path)) for error in errors)


def _server_side_rules(schema: dict[str, Any], value: Any) -> list[str]:
    """CEL rules (run by a real CEL interpreter) and list-map keys, as the test API enforces them."""
    return [str(cause) for cause in validation.server_side_rules(schema, value, "spec")]


def test_every_cel_rule_compiles() -> None:
    rules: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            rules.extend(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(crd.spec_schema())
    assert rules, "the schema has CEL rules"
    for rule in rules:
        cel.compile(rule)


def test_a_realistic_spec_passes_the_server_side_rules() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["targets"] = [{"name": "node-a"}, {"name": "node-b"}]
    assert _server_side_rules(crd.spec_schema(), spec) == []


def test_an_inline_password_is_refused_by_the_api_server() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["params"]["password"] = "hunter2"
    [refusal] = _server_side_rules(crd.spec_schema(), spec)
    assert refusal.startswith("spec.connections.primary.params: Invalid value: passwords go in a Secret")


@pytest.mark.parametrize(
    "params",
    [
        {"sslpassword": "x"},
        {"dbname": "dbname=app password=hunter2"},
        {"dbname": "dbname=app  PASSWORD = hunter2"},
        {"dbname": "postgresql://maint:hunter2@pg-rw/app"},
        {"host": "postgres://maint:hunter2@pg-rw"},
        {"dbname": "postgresql://pg-rw/app?sslmode=require&password=hunter2"},
    ],
)
def test_passwords_hidden_in_conninfo_strings_and_uris_are_refused(params: dict[str, str]) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["params"] = params
    assert any(
        "passwords go in a Secret" in refusal for refusal in _server_side_rules(crd.spec_schema(), spec)
    )
    with pytest.raises(pydantic.ValidationError, match="carries a password"):
        resource.PgQuartzJobSpec.model_validate(spec)
    spec = copy.deepcopy(VALID_SPEC)
    spec["targets"] = [{"name": "a", "connections": {"primary": params}}]
    assert any(
        "passwords go in a Secret" in refusal for refusal in _server_side_rules(crd.spec_schema(), spec)
    )


def test_conninfo_without_a_password_is_fine() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["params"] = {"dbname": "postgresql://maint@pg-rw/app?sslmode=require"}
    assert _server_side_rules(crd.spec_schema(), spec) == []
    resource.PgQuartzJobSpec.model_validate(spec)


@pytest.mark.parametrize("name", ["база", "shell", "1st", "a b"])
def test_connection_names_must_be_ascii_identifiers_and_not_shell(name: str) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"] = {name: spec["connections"]["primary"]}
    [refusal] = _server_side_rules(crd.spec_schema(), spec)
    assert "connection names are ASCII identifiers" in refusal
    with pytest.raises(pydantic.ValidationError, match="connection names are ASCII identifiers"):
        resource.PgQuartzJobSpec.model_validate(spec)


def test_connections_sharing_a_password_variable_are_refused() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"] = {"a-b": spec["connections"]["primary"], "a_b": spec["connections"]["primary"]}
    with pytest.raises(pydantic.ValidationError, match="'a-b' and 'a_b' would share the password variable"):
        resource.PgQuartzJobSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda s: s.update(resources={"limits": "everything"}), "resources"),
        (lambda s: s.update(resources={"requests": {"cpu": "-1"}}), "cpu"),
        (lambda s: s.update(resources={"requests": {"cpu": "lots"}}), "cpu"),
        (lambda s: s.update(podTemplate={"tolerations": [{"key": "x", "hostPath": "/"}]}), "hostPath"),
        (
            lambda s: s["connections"]["primary"].update(passwordSecretRef={"name": "Bad_Name", "key": "k"}),
            "name",
        ),
        (
            lambda s: s["connections"]["primary"].update(passwordSecretRef={"name": "ok", "key": "bad key!"}),
            "key",
        ),
        (lambda s: s.update(podTemplate={"serviceAccountName": "Not A Name"}), "serviceAccountName"),
        (lambda s: s.update(podTemplate={"nodeSelector": {"disk": "x" * 64}}), "nodeSelector"),
        (lambda s: s.update(image="evil image"), "image"),
    ],
)
def test_kubernetes_fields_are_refused_by_the_schema_not_by_the_api_server_later(
    change: Any, where: str
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    change(spec)
    errors = list(_validator().iter_errors(spec))
    assert errors, f"{where} should be rejected"
    assert any(where in error.message or where in "/".join(map(str, error.path)) for error in errors)
    with pytest.raises(pydantic.ValidationError):
        resource.PgQuartzJobSpec.model_validate(spec)


def test_quantities_may_be_numbers_or_strings() -> None:
    spec = copy.deepcopy(VALID_SPEC) | {"resources": {"requests": {"cpu": 1, "memory": "256Mi"}}}
    assert list(_validator().iter_errors(spec)) == []
    assert _server_side_rules(crd.spec_schema(), spec) == []
    resource.PgQuartzJobSpec.model_validate(spec)


def test_target_names_must_be_unique() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["targets"] = [{"name": "node-a"}, {"name": "node-a"}]
    assert _server_side_rules(crd.spec_schema(), spec) == ["spec.targets: Duplicate value: ('node-a',)"]
