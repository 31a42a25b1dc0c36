"""How a write changes a stored object: the four patch types and server-side apply's field ownership.

- ``application/merge-patch+json`` (RFC 7386): maps merge, ``null`` deletes, lists are replaced.
- ``application/json-patch+json`` (RFC 6902), ``test`` operations included.
- ``application/strategic-merge-patch+json`` (built-in kinds only; a custom resource answers
  ``415``): as a merge patch, but lists with a ``x-kubernetes-patch-merge-key`` merge item by item,
  ``$patch: delete`` removes an item, other ``$…`` directives are dropped.
- ``application/apply-patch+yaml`` (server-side apply, sigs.k8s.io/structured-merge-diff): the
  applied configuration is merged into the live object (``list-type: map`` lists item by key, other
  lists atomically); every field it sets is owned by its field manager; a field the same manager
  applied before and applies no longer is removed, unless another manager owns it too; setting a
  field another manager owns to another value is a ``409 Conflict`` unless ``force=true``.
  Non-apply writes make their manager (``fieldManager``, else the User-Agent's product) the owner of
  the fields they change, as the server records ``Update`` operations.

Field sets are kept by the emulator beside the objects, not rendered as ``metadata.managedFields``
(nothing under test reads them); the semantics above are what the operator relies on.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import jsonpatch

from tests.support.apiserver import schemas

Segment = str | tuple[str, tuple[tuple[str, Any], ...]]
Path = tuple[Segment, ...]
FieldSets = dict[str, set[Path]]
"""Field manager → the fields it owns."""

SYSTEM_FIELDS = ("resourceVersion", "generation", "uid", "creationTimestamp", "managedFields", "selfLink")


class Conflict(Exception):
    """An apply would change fields another manager owns (the server's 409 with the conflicts)."""

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts
        super().__init__(
            "Apply failed with {} conflicts: {}".format(
                len(conflicts), "; ".join(f'conflict with "{who}": {field}' for who, field in conflicts)
            )
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Mapping[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902; a failed ``test`` raises ``jsonpatch.JsonPatchTestFailed``."""
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(dict(target)), operations)
    return result


def strategic_merge_patch(target: Any, patch: Any, node: schemas.Node) -> Any:
    if not isinstance(patch, Mapping):
        if isinstance(patch, list) and isinstance(target, list) and node.merge_key():
            return _merge_items(target, patch, node)
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {key: value for key, value in patch.items() if not key.startswith("$")}
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, node.child(key))
    return result


def _merge_items(target: list[Any], patch: list[Any], node: schemas.Node) -> list[Any]:
    key = node.merge_key()
    result = list(target)
    for item in patch:
        if not isinstance(item, Mapping):
            continue
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, Mapping) and old.get(key) == item.get(key)),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item, node.items()))
        else:
            result[index] = strategic_merge_patch(result[index], item, node.items())
    return result


# --- server-side apply ----------------------------------------------------------------------------


def _element(item: Mapping[str, Any], keys: tuple[str, ...]) -> Segment:
    return ("k", tuple((key, item.get(key)) for key in keys))


def fields(value: Any, node: schemas.Node, prefix: Path = ()) -> Iterator[Path]:
    """The leaf fields of ``value``: map keys, items of keyed lists; atomic lists and scalars are leaves."""
    if isinstance(value, Mapping):
        if not value:
            yield prefix
        for key, item in value.items():
            if not prefix and key in ("apiVersion", "kind"):
                continue
            if prefix == ("metadata",) and key in (*SYSTEM_FIELDS, "name", "namespace"):
                continue
            yield from fields(item, node.child(key), (*prefix, key))
        return
    keys = node.map_keys()
    if isinstance(value, list) and keys and all(isinstance(item, Mapping) for item in value):
        for item in value:
            element = (*prefix, _element(item, keys))
            yield element
            for key, sub in item.items():
                if key not in keys:
                    yield from fields(sub, node.items().child(key), (*element, key))
        return
    yield prefix


def _find(container: Any, segment: Segment) -> tuple[bool, Any]:
    if isinstance(segment, str):
        if isinstance(container, Mapping) and segment in container:
            return True, container[segment]
        return False, None
    if isinstance(container, list):
        for item in container:
            if isinstance(item, Mapping) and all(item.get(k) == v for k, v in segment[1]):
                return True, item
    return False, None


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    for segment in path:
        found, obj = _find(obj, segment)
        if not found:
            return False, None
    return True, obj


def _remove(obj: Any, path: Path) -> None:
    found, parent = value_at(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if isinstance(last, str):
        if isinstance(parent, dict):
            parent.pop(last, None)
    elif isinstance(parent, list):
        parent[:] = [
            item
            for item in parent
            if not (isinstance(item, Mapping) and all(item.get(k) == v for k, v in last[1]))
        ]


def _merge(live: Any, config: Any, node: schemas.Node) -> Any:
    if isinstance(config, Mapping) and isinstance(live, Mapping):
        result = dict(live)
        for key, value in config.items():
            result[key] = _merge(live.get(key), value, node.child(key))
        return result
    keys = node.map_keys()
    if keys and isinstance(config, list) and isinstance(live, list):
        result_list = list(live)
        for item in config:
            index = next(
                (
                    i
                    for i, old in enumerate(result_list)
                    if isinstance(old, Mapping) and all(old.get(k) == item.get(k) for k in keys)
                ),
                None,
            )
            if index is None:
                result_list.append(copy.deepcopy(item))
            else:
                result_list[index] = _merge(result_list[index], item, node.items())
        return result_list
    return copy.deepcopy(config)


def _describe(path: Path) -> str:
    text = ""
    for segment in path:
        if isinstance(segment, str):
            text += f".{segment}"
        else:
            text += "[" + ",".join(f"{k}={v!r}" for k, v in segment[1]) + "]"
    return text


def apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    *,
    node: schemas.Node,
    owners: FieldSets,
    manager: str,
    force: bool,
) -> dict[str, Any]:
    """Server-side apply of ``config`` by ``manager`` onto ``live``; updates ``owners`` in place."""
    live = copy.deepcopy(dict(live or {}))
    applied = set(fields(config, node))
    changing = {path for path in applied if value_at(live, path) != value_at(config, path)}
    others = {other: owned for other, owned in owners.items() if other != manager}
    conflicts = sorted(
        (other, _describe(path)) for other, owned in others.items() for path in owned & changing
    )
    if conflicts and not force:
        raise Conflict(conflicts)
    for owned in others.values():
        owned.difference_update(changing)  # forced: the fields change hands
    merged: dict[str, Any] = _merge(live, config, node)
    shared: set[Path] = set().union(*others.values())
    for path in sorted(owners.get(manager, set()) - applied, key=len, reverse=True):
        if path in shared or any(other[: len(path)] == path for other in shared):
            continue
        _remove(merged, path)
        _drop_empty_parents(merged, path, keep=shared | applied)
    owners[manager] = applied
    return merged


def _drop_empty_parents(obj: dict[str, Any], path: Path, *, keep: set[Path]) -> None:
    for depth in range(len(path) - 1, 0, -1):
        parent = path[:depth]
        found, value = value_at(obj, parent)
        if not found or value not in ({}, []) or parent in keep:
            return
        _remove(obj, parent)


def record_update(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    node: schemas.Node,
    owners: FieldSets,
    manager: str,
) -> None:
    """A non-apply write: ``manager`` now owns what it changed; others lose those fields."""
    before = set(fields(old or {}, node))
    after = set(fields(new, node))
    changed = {path for path in after if value_at(old or {}, path) != value_at(new, path)}
    removed = before - after
    for other, owned in owners.items():
        if other != manager:
            owned.difference_update(changed | removed)
    owners.setdefault(manager, set()).update(changed)
    owners[manager] -= removed
    for other in [name for name, owned in owners.items() if not owned]:
        del owners[other]
