"""The schemas an API server holds: built-in kinds per Kubernetes minor, and the PgQuartzJob CRD.

Built-in kinds come from the ``kubernetes-validate`` wheel, which ships the
OpenAPI of every minor from 1.25 on as JSON Schema (its ``-strict`` flavour
refuses unknown fields, as ``kubectl``'s strict field validation does). They
also carry the OpenAPI's ``x-kubernetes-list-type`` / ``-list-map-keys``
(and the strategic-merge ``x-kubernetes-patch-merge-key``), which is what
server-side apply and strategic merge patches need to know which lists merge
by key and which are atomic. The PgQuartzJob's schema is the committed CRD, as
a cluster would have it installed.

Loading a minor's definitions takes ~50 ms (1.8 MB of JSON), so everything is
cached per minor.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.protocols
import kubernetes_validate
import referencing
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CRD_FILE = ROOT / "crds" / "pgquartzjobs.pgquartz.io.yaml"
_SCHEMAS = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
_DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"

SUPPORTED_MINORS = tuple(f"1.{minor}" for minor in range(30, 38))
"""Every minor the operator supports: the ones the large managed providers still run (README)."""


def _folder(minor: str) -> pathlib.Path:
    return _SCHEMAS / f"v{minor}.0-local-strict"


@functools.cache
def _definitions(minor: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_folder(minor) / "_definitions.json").read_text())
    return data


def _file_name(api_version: str, kind: str) -> str:
    # rbac.authorization.k8s.io/v1 → rbac-v1, batch/v1 → batch-v1, v1 → v1
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


@functools.cache
def builtin_schema(minor: str, api_version: str, kind: str) -> dict[str, Any] | None:
    """The strict JSON Schema of a built-in kind in ``minor`` (``1.30``), or None if it has none."""
    path = _folder(minor) / _file_name(api_version, kind)
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@functools.cache
def builtin_validator(minor: str, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    schema = builtin_schema(minor, api_version, kind)
    if schema is None:
        return None
    definitions = referencing.Resource.from_contents(_definitions(minor))
    registry: referencing.Registry[Any] = definitions @ referencing.Registry()
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return validator


@functools.cache
def crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return data


def crd_schema() -> dict[str, Any]:
    """The PgQuartzJob's ``openAPIV3Schema`` (the whole object: spec and status)."""
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


class Node:
    """A place in a schema, followed down an object's path: what kind of list is here, what is below.

    Built-in schemas use ``$ref`` into the minor's definitions; CRD schemas are
    structural (inline). An unknown place is an empty node: lists there are atomic.
    """

    def __init__(self, schema: Mapping[str, Any] | None, definitions: Mapping[str, Any] | None = None):
        self._definitions = definitions or {}
        self.schema: Mapping[str, Any] = self._resolve(schema or {})

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            schema = {
                **self._definitions.get("$defs", {}).get(name, {}),
                **{key: value for key, value in schema.items() if key != "$ref"},
            }
        for option in schema.get("oneOf", ()) if "properties" not in schema else ():
            if isinstance(option, Mapping) and ("$ref" in option or "properties" in option):
                return self._resolve(option)
        return schema

    def child(self, key: str) -> Node:
        properties = self.schema.get("properties") or {}
        if key in properties:
            return Node(properties[key], self._definitions)
        extra = self.schema.get("additionalProperties")
        return Node(extra if isinstance(extra, Mapping) else None, self._definitions)

    def items(self) -> Node:
        items = self.schema.get("items")
        return Node(items if isinstance(items, Mapping) else None, self._definitions)

    def map_keys(self) -> tuple[str, ...] | None:
        """The keys of a ``list-type: map`` list (server-side apply merges its items by them)."""
        if self.schema.get("x-kubernetes-list-type") == "map":
            return tuple(self.schema.get("x-kubernetes-list-map-keys") or ())
        return None

    def merge_key(self) -> str | None:
        """The strategic-merge-patch key of a list (``x-kubernetes-patch-merge-key``)."""
        if "merge" in str(self.schema.get("x-kubernetes-patch-strategy", "")):
            return str(self.schema.get("x-kubernetes-patch-merge-key") or "") or None
        return None


def root(minor: str, api_version: str, kind: str) -> Node:
    """The schema node of a whole object of this kind."""
    if kind == "PgQuartzJob":
        return Node(crd_schema())
    return Node(builtin_schema(minor, api_version, kind), _definitions(minor))
