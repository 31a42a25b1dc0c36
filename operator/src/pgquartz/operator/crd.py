"""The PgQuartzJob CustomResourceDefinition, generated from the runner's model.

One source of truth: ``spec.job`` is the job file's own schema (the runner's
model: pgquartz.runner.model), turned into a *structural* OpenAPI v3 schema as Kubernetes
requires: references inlined, ``anyOf [X, null]`` turned into ``nullable``,
``additionalProperties: false`` left to the API server's pruning (it is not
allowed in structural schemas), defaults and patterns kept so the API server
defaults and validates what it can. ``crds/`` holds the rendered file; a test
fails when it is stale (``python -m pgquartz.operator.crd > crds/…`` renews it).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from pgquartz.operator import resource

CRD_NAME = f"{resource.PLURAL}.{resource.GROUP}"
FILE_NAME = f"{CRD_NAME}.yaml"

_DROPPED = {"title", "$schema", "$defs", "discriminator"}


def structural(schema: dict[str, Any], definitions: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON Schema (pydantic's, with the runner's inside) → a structural OpenAPI v3 schema for a CRD."""
    definitions = schema.get("$defs", {}) if definitions is None else definitions
    return _convert(schema, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any], *, in_list: bool = False) -> dict[str, Any]:
    """``in_list``: inside a list's items no ``default`` is kept. The API server would fill defaults
    into every item, and clients that compare lists whole (kubectl's and Argo CD's three-way diff)
    would then see every applied list as changed; the runner applies those defaults itself."""
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(definitions[node.pop("$ref").rsplit("/", 1)[1]])
        node = {**target, **node}
    if "anyOf" in node:
        everything = node.pop("anyOf")
        options = [option for option in everything if option != {"type": "null"}]
        nullable = len(options) < len(everything)
        if sorted(option.get("type", "") for option in options) == ["integer", "string"]:
            # int-or-string (a quantity): the form Kubernetes' own schemas use
            pattern = node.pop("pattern", None) or next(
                (o["pattern"] for o in options if "pattern" in o), None
            )
            node = {
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "x-kubernetes-int-or-string": True,
                **({"pattern": pattern} if pattern else {}),
                **node,
            }
            if nullable:
                node["nullable"] = True
            return node
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {options}")
        node = {**_convert(options[0], definitions, in_list=in_list), **node, "nullable": True}
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and (value is None or in_list)):
            continue
        if key == "additionalProperties":
            if value is False:
                continue
            if value is True:
                result["x-kubernetes-preserve-unknown-fields"] = True
                continue
            result[key] = _convert(value, definitions, in_list=in_list)
        elif key == "properties":
            result[key] = {name: _convert(sub, definitions, in_list=in_list) for name, sub in value.items()}
        elif key == "items":
            result[key] = _convert(value, definitions, in_list=True)
        else:
            result[key] = value
    if "enum" in result and "type" not in result:
        result["type"] = "string"
    if result.get("type") == "object" and "properties" not in result and "additionalProperties" not in result:
        result["x-kubernetes-preserve-unknown-fields"] = True
    return result


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
        },
    }


def status_schema() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "observedSpec": {
                "type": "string",
                "description": "A digest of the spec the conditions describe.",
            },
            "bookkeeping": {
                "type": "object",
                "description": "The operator's bookkeeping: the spec last handled, handlers being retried.",
                "properties": {"handledSpec": {"type": "string"}},
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "lastScheduleTime": time,
            "lastSuccessfulTime": time,
            "targets": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": 50,
                "description": "The targets of the last rendering (a targetsFrom cluster's instances).",
            },
            "handledRunNow": {
                "type": "string",
                "description": "The last pgquartz.io/run-now value acted on.",
            },
            "lastRun": {
                "type": "object",
                "properties": {
                    "job": {"type": "string"},
                    "startTime": time,
                    "completionTime": time,
                    "result": {"type": "string"},
                    "exitCode": {"type": "integer"},
                    "failedSteps": {"type": "array", "items": {"type": "string"}},
                    "message": {"type": "string"},
                    "outcome": {
                        "type": "string",
                        "description": "The runner's outcome: succeeded, gated, failover, check-failed, …",
                    },
                    "retries": {
                        "type": "integer",
                        "description": "How often commands were run again after transient errors.",
                    },
                    "gated": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Why the job's gates kept the run from starting.",
                    },
                    "failover": {
                        "type": "object",
                        "description": "A failover a connection saw during the run.",
                        "properties": {
                            "connection": {"type": "string"},
                            "action": {"type": "string"},
                            "changes": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "budget": {
                        "type": "object",
                        "description": "The budget slot the run held, and the seconds it waited for it.",
                        "properties": {
                            "key": {"type": "string"},
                            "slot": {"type": "integer"},
                            "waited": {"type": "number"},
                        },
                    },
                },
            },
        },
    }


def spec_schema() -> dict[str, Any]:
    schema = resource.PgQuartzJobSpec.model_json_schema(by_alias=True, mode="validation")
    converted = structural(schema)
    converted.pop("description", None)
    return converted


def definition() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.KIND,
                "listKind": f"{resource.KIND}List",
                "plural": resource.PLURAL,
                "singular": resource.KIND.lower(),
                "shortNames": [resource.SHORT_NAME],
                "categories": ["all", "pgquartz"],
            },
            "versions": [
                {
                    "name": resource.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
                        {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
                        {"name": "Cluster", "type": "string", "jsonPath": ".spec.targetsFrom.cluster.name"},
                        {"name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
                        {"name": "Last Result", "type": "string", "jsonPath": ".status.lastRun.result"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A PgQuartz job run on a schedule by the pgquartz operator.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    import yaml

    header = "# Generated from pgquartz's model by `python -m pgquartz.operator.crd`; do not edit.\n"
    return header + yaml.safe_dump(definition(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
