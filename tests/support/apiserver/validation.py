"""Validation: what an API server refuses with ``422 Unprocessable Entity`` (and what it prunes).

Every write is checked after defaulting, as a real server does:

- Built-in kinds against the strict JSON Schema of the minor under test (``kubernetes-validate``):
  unknown fields, wrong types, required fields (``onPodConditions[].status`` on 1.25–1.34).
- What the OpenAPI cannot say, from ``staging/src/k8s.io/apimachinery/pkg/util/validation`` and
  ``pkg/apis/{core,batch}/validation``: object names (DNS-1123 subdomains; CronJob names at most 52
  characters, ``ValidateCronJobName``; Job names at most 63, as the ``job-name`` label the server adds
  must fit), label keys and values (at most 63 characters), annotations (256 KiB in total,
  ``ValidateAnnotationsSize``), ConfigMap and Secret keys (``IsConfigMapKey``) and sizes (1 MiB),
  environment variable names (``IsEnvVarName``; printable ASCII from 1.32 on with
  ``RelaxedEnvironmentVariableValidation``), resource quantities (``resource.ParseQuantity``, not
  negative), a Job template's ``restartPolicy`` (``Never`` with a ``podFailurePolicy``), ``Indexed``
  completions.
- The PgQuartzJob against its CRD's ``openAPIV3Schema``: unknown fields are pruned (or refused with
  ``fieldValidation=Strict``), then JSON Schema, ``x-kubernetes-validations`` (CEL, run by a real CEL
  interpreter) and ``list-type: map`` key uniqueness.

Each problem is a :class:`Cause` as the server words it (``field: Required value``), so a 422's
message reads like one from a cluster.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import cel
import jsonschema
import jsonschema.protocols

from tests.support.apiserver import schemas

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = re.compile(rf"^{DNS_LABEL}(\.{DNS_LABEL})*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
QUANTITY = re.compile(
    r"^([+-]?)(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
MAX_ANNOTATIONS = 256 * 1024  # TotalAnnotationSizeLimitB
MAX_DATA = 1024 * 1024  # MaxSecretSize, also the ConfigMap limit
MAX_NAME_LENGTH = {"CronJob": 52, "Job": 63}


@dataclasses.dataclass(frozen=True)
class Cause:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validate(obj: Mapping[str, Any], *, minor: str) -> list[Cause]:
    """Every reason the API server of ``minor`` would refuse to store ``obj`` (already defaulted)."""
    kind = str(obj.get("kind", ""))
    causes = list(_metadata(obj, kind))
    if kind == "PgQuartzJob":
        causes += _custom_resource(obj)
        return causes
    validator = schemas.builtin_validator(minor, str(obj.get("apiVersion", "")), kind)
    if validator is not None:
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            causes.append(Cause(_path(error.absolute_path) or "<root>", _schema_message(error)))
    causes += _builtin_rules(obj, kind, minor)
    return causes


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        return f"Required value: {error.message}"
    if error.validator == "additionalProperties":
        return f"field not declared in schema: {error.message}"
    return f"Invalid value: {error.message}"


def _metadata(obj: Mapping[str, Any], kind: str) -> Iterator[Cause]:
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    if not name:
        yield Cause("metadata.name", "Required value: name or generateName is required")
    elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        yield Cause(
            "metadata.name",
            f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric"
            " characters, '-' or '.', and must start and end with an alphanumeric character",
        )
    limit = MAX_NAME_LENGTH.get(kind)
    if limit is not None and len(name) > limit:
        yield Cause("metadata.name", f"Invalid value: {name!r}: must be no more than {limit} characters")
    for key, value in (metadata.get("labels") or {}).items():
        yield from _qualified_name(f"metadata.labels[{key}]", key)
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            yield Cause(
                f"metadata.labels[{key}]",
                f"Invalid value: {str(value)[:80]!r}: a valid label must be an empty string or consist of"
                " alphanumeric characters, '-', '_' or '.', and must be no more than 63 characters",
            )
    annotations = metadata.get("annotations") or {}
    for key in annotations:
        yield from _qualified_name(f"metadata.annotations[{key}]", key)
    size = sum(len(key) + len(str(value)) for key, value in annotations.items())
    if size > MAX_ANNOTATIONS:
        yield Cause("metadata.annotations", f"Too long: may not be more than {MAX_ANNOTATIONS} bytes")


def _qualified_name(field: str, key: str) -> Iterator[Cause]:
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix))) or (
        len(name) > 63 or not QUALIFIED_NAME.match(name)
    ):
        yield Cause(field, f"Invalid value: {key[:80]!r}: name part must be no more than 63 characters")


def _builtin_rules(obj: Mapping[str, Any], kind: str, minor: str) -> list[Cause]:
    causes: list[Cause] = []
    if kind in ("ConfigMap", "Secret"):
        size = 0
        for field in ("data", "binaryData", "stringData"):
            for key, value in (obj.get(field) or {}).items():
                size += len(str(value))
                if len(key) > 253 or not CONFIG_MAP_KEY.match(key) or key in (".", ".."):
                    causes.append(
                        Cause(
                            f"{field}[{key}]",
                            "Invalid value: a valid config key must consist of"
                            " alphanumeric characters, '-', '_' or '.'",
                        )
                    )
        if size > MAX_DATA:
            causes.append(Cause("<root>", f"Too long: must have at most {MAX_DATA} bytes"))
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        causes += _job_spec(spec.get("jobTemplate", {}).get("spec") or {}, "spec.jobTemplate.spec", minor)
    elif kind == "Job":
        causes += _job_spec(spec, "spec", minor)
    elif kind == "Pod":
        causes += _pod_spec(spec, "spec", minor)
    return causes


def _job_spec(spec: Mapping[str, Any], field: str, minor: str) -> list[Cause]:
    causes: list[Cause] = []
    pod = spec.get("template", {}).get("spec") or {}
    restart = pod.get("restartPolicy")
    if restart not in ("Never", "OnFailure"):
        causes.append(
            Cause(
                f"{field}.template.spec.restartPolicy",
                f'Unsupported value: "{restart}": supported values: "OnFailure", "Never"',
            )
        )
    elif spec.get("podFailurePolicy") and restart != "Never":
        causes.append(
            Cause(
                f"{field}.template.spec.restartPolicy",
                'Invalid value: only "Never" is supported when podFailurePolicy is specified',
            )
        )
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        causes.append(Cause(f"{field}.completions", "Required value: when completion mode is Indexed"))
    causes += _pod_spec(pod, f"{field}.template.spec", minor)
    return causes


def _pod_spec(pod: Mapping[str, Any], field: str, minor: str) -> list[Cause]:
    causes: list[Cause] = []
    relaxed = tuple(map(int, minor.split("."))) >= (1, 32)
    for group in ("initContainers", "containers"):
        for index, container in enumerate(pod.get(group) or []):
            where = f"{field}.{group}[{index}]"
            for position, variable in enumerate(container.get("env") or []):
                name = str(variable.get("name", ""))
                valid = (
                    bool(name) and "=" not in name and all(32 <= ord(c) <= 126 for c in name)
                    if relaxed
                    else bool(ENV_VAR_NAME.match(name))
                )
                if not valid:
                    causes.append(
                        Cause(
                            f"{where}.env[{position}].name",
                            f"Invalid value: {name!r}: a valid environment"
                            " variable name must consist of printable ASCII characters other than '='",
                        )
                    )
            for section in ("requests", "limits"):
                for resource, quantity in ((container.get("resources") or {}).get(section) or {}).items():
                    text = str(quantity)
                    match = QUANTITY.match(text)
                    if match is None:
                        causes.append(
                            Cause(
                                f"{where}.resources.{section}[{resource}]",
                                f"Invalid value: {text!r}:"
                                " quantities must match the regular expression of resource.Quantity",
                            )
                        )
                    elif match.group(1) == "-" and float(match.group(2) or 0) != 0:
                        causes.append(
                            Cause(
                                f"{where}.resources.{section}[{resource}]",
                                f"Invalid value: {text!r}: must be greater than or equal to 0",
                            )
                        )
    return causes


# --- custom resources ---------------------------------------------------------------------------


def prune(value: Any, schema: Mapping[str, Any], path: str = "") -> tuple[Any, list[str]]:
    """``value`` without the fields its structural schema does not declare, and their paths
    (what the API server drops, or refuses under ``fieldValidation=Strict``)."""
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    if preserve and "properties" not in schema:
        return value, []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        kept: dict[str, Any] = {}
        dropped: list[str] = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                kept[key], lost = prune(item, properties[key], where)
            elif isinstance(extra, Mapping):
                kept[key], lost = prune(item, extra, where)
            elif (properties is None and extra is None) or preserve:  # declared fields are still pruned
                kept[key], lost = item, []
            else:
                dropped.append(where)
                continue
            dropped += lost
        return kept, dropped
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        results = [prune(item, schema["items"], f"{path}[{index}]") for index, item in enumerate(value)]
        return [item for item, _ in results], [lost for _, found in results for lost in found]
    return value, []


def as_json_schema(node: Any, *, strict_fields: bool = False) -> Any:
    """OpenAPI v3 (structural) → JSON Schema: ``nullable`` as a type list, int-or-string as either.

    ``strict_fields``: fields the schema does not declare are errors (``fieldValidation=Strict``),
    not pruned."""
    if isinstance(node, dict):
        converted = {
            key: as_json_schema(value, strict_fields=strict_fields)
            for key, value in node.items()
            if not key.startswith("x-kubernetes")
        }
        if converted.pop("nullable", False) and "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if node.get("x-kubernetes-int-or-string"):
            converted["type"] = ["integer", "string"]
        converted.pop("format", None)  # the server checks few formats; the CRD's are informative
        if (
            strict_fields
            and "properties" in converted
            and "additionalProperties" not in converted
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            converted["additionalProperties"] = False
        return converted
    if isinstance(node, list):
        return [as_json_schema(item, strict_fields=strict_fields) for item in node]
    return node


@functools.cache
def _crd_validator() -> jsonschema.protocols.Validator:
    validator: jsonschema.protocols.Validator = jsonschema.Draft7Validator(
        as_json_schema(schemas.crd_schema())
    )
    return validator


def server_side_rules(node: Mapping[str, Any], value: Any, path: str) -> list[Cause]:
    """What the API server enforces beyond JSON Schema: CEL rules (``x-kubernetes-validations``, run
    with a real CEL interpreter) and unique keys of ``list-type: map`` lists."""
    causes: list[Cause] = []
    for rule in node.get("x-kubernetes-validations", []):
        if not cel.evaluate(rule["rule"], {"self": json.loads(json.dumps(value))}):
            causes.append(Cause(path, f"Invalid value: {rule.get('message') or rule['rule']}"))
    if node.get("x-kubernetes-list-type") == "map" and isinstance(value, list):
        keys = [tuple(item.get(key) for key in node["x-kubernetes-list-map-keys"]) for item in value]
        causes += [Cause(path, f"Duplicate value: {key}") for key in sorted(set(keys)) if keys.count(key) > 1]
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for name, sub in properties.items():
            if name in value:
                causes += server_side_rules(sub, value[name], f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            for name, item in value.items():
                if name not in properties:
                    causes += server_side_rules(node["additionalProperties"], item, f"{path}.{name}")
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            causes += server_side_rules(node["items"], item, f"{path}[{index}]")
    return causes


def _custom_resource(obj: Mapping[str, Any]) -> list[Cause]:
    body = {key: value for key, value in obj.items() if key != "metadata"}
    causes = [
        Cause(_path(error.absolute_path) or "<root>", _schema_message(error))
        for error in sorted(_crd_validator().iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if causes:
        return causes  # CEL rules run only on values of the right shape
    schema = schemas.crd_schema()
    for section in ("spec", "status"):
        if section in obj:
            causes += server_side_rules(schema["properties"][section], obj[section], section)
    return causes
