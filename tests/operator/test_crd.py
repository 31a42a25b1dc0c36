"""The PgQuartzJob CRD: generated from the runner's model, structural, valid, and up to date."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import cel
import jsonschema
import kubernetes_validate
import pytest
import yaml

from pgquartz.operator import crd

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
        if forbidden in node:
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
    assert set(job["properties"]) == {"steps", "checks", "parallel", "timeout", "debug", "runOnRoleError"}
    step = job["properties"]["steps"]["additionalProperties"]
    assert {"commands", "depends", "when", "matrix"} <= set(step["properties"])
    assert job["properties"]["parallel"]["minimum"] == 1 and job["properties"]["parallel"]["default"] == 1
    assert "pattern" in job["properties"]["timeout"]


def _as_json_schema(node: Any) -> Any:
    """OpenAPI's ``nullable`` → JSON Schema's type list, to validate resources like the API server."""
    if isinstance(node, dict):
        node = {
            key: _as_json_schema(value) for key, value in node.items() if not key.startswith("x-kubernetes")
        }
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False  # what pruning would drop, validation should flag
        return node
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    return node


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
    "lock": {"endpoints": ["etcd:2379"], "ttl": "1m"},
}


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_as_json_schema(crd.spec_schema()))


def test_a_realistic_spec_is_accepted() -> None:
    assert list(_validator().iter_errors(VALID_SPEC)) == []


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


def _server_side_rules(node: dict[str, Any], value: Any, path: str = "spec") -> list[str]:
    """What the API server enforces beyond JSON Schema: CEL rules (x-kubernetes-validations, run
    with a real CEL interpreter) and unique keys of list-type maps."""
    failures = []
    for rule in node.get("x-kubernetes-validations", []):
        if not cel.evaluate(rule["rule"], {"self": value}):
            failures.append(f"{path}: {rule['message']}")
    if node.get("x-kubernetes-list-type") == "map" and isinstance(value, list):
        keys = [tuple(item.get(key) for key in node["x-kubernetes-list-map-keys"]) for item in value]
        failures += [f"{path}: duplicate entry {key}" for key in sorted(set(keys)) if keys.count(key) > 1]
    if isinstance(value, dict):
        for name, sub in node.get("properties", {}).items():
            if name in value:
                failures += _server_side_rules(sub, value[name], f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            for name, item in value.items():
                failures += _server_side_rules(node["additionalProperties"], item, f"{path}.{name}")
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            failures += _server_side_rules(node["items"], item, f"{path}[{index}]")
    return failures


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
    assert _server_side_rules(crd.spec_schema(), spec) == [
        "spec.connections.primary.params: passwords go in a Secret: use passwordSecretRef"
    ]


def test_target_names_must_be_unique() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["targets"] = [{"name": "node-a"}, {"name": "node-a"}]
    assert _server_side_rules(crd.spec_schema(), spec) == ["spec.targets: duplicate entry ('node-a',)"]
