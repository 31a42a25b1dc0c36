"""Writing a PgQuartzJob's children: only objects it owns, only when they drifted, by server-side apply.

An API server fills in defaults (``dnsPolicy``, ``terminationMessagePath``,
``imagePullPolicy``, ``defaultMode`` …) on everything it stores, and the CronJob
controller writes the CronJob's status at every run, so the stored object is
never what was rendered. A child is written again only when

- the rendering changed: its ``pgquartz.io/rendered`` digest differs (server-side apply then also
  drops the fields the operator no longer renders), or
- something the operator renders was changed or removed by hand: every rendered field must be
  there with the rendered value; what the server or other field managers add is theirs.

Another resource's child is never touched: an object whose controller owner is not this
PgQuartzJob (or that has no controller owner) stops the reconcile with :class:`NameConflict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pgquartz.operator import clusters, manifests, validation
from pgquartz.operator import quantities as kubequantities


class ObjectStore(Protocol):
    """What the handlers need of the API (pgquartz.operator.kubeapi.KubernetesStore)."""

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None: ...

    def apply(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Server-side apply, forced, as the operator's field manager."""
        ...

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch a PgQuartzJob's status subresource."""
        ...

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The key names of a Secret (never its values), or None if it does not exist."""
        ...


class NameConflict(Exception):
    """A child's name is taken by an object this PgQuartzJob does not control."""


QUANTITY_MAPS = ("limits", "requests")
"""Maps whose values are resource quantities, which the API server stores in canonical form."""


def contains(live: Any, wanted: Any, *, quantities: bool = False) -> bool:
    """Whether every field of ``wanted`` is in ``live`` with the same value (maps may have more keys;
    lists must have the same items in the same order, each containing the wanted one; the values of
    ``limits`` and ``requests`` compare as quantities, ``1000m`` being ``1``)."""
    if isinstance(wanted, Mapping):
        if not isinstance(live, Mapping):
            return False
        for key, value in wanted.items():
            if key not in live:
                return False
            if quantities:
                if not kubequantities.same(live[key], value):
                    return False
            elif not contains(live[key], value, quantities=key in QUANTITY_MAPS):
                return False
        return True
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(have, want) for have, want in zip(live, wanted, strict=True))
        )
    return bool(live == wanted and type(live) is type(wanted))


def differs(live: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the object in the cluster needs writing to be what the operator rendered."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(manifests.ANNOTATION_RENDERED) != wanted["metadata"]["annotations"].get(
        manifests.ANNOTATION_RENDERED
    ):
        return True
    return not contains(live, {key: value for key, value in wanted.items() if key != "status"})


def controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference of ``obj`` that names its controller, if any."""
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in references if ref.get("controller")), None)


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    reference = controller(obj)
    return None if reference is None else str(reference.get("uid"))


def ownership_problem(live: Mapping[str, Any], owner: Mapping[str, Any]) -> str | None:
    """Why ``live`` is not this PgQuartzJob's to write, or None if it is."""
    reference = controller(live)
    if reference is not None and str(reference.get("uid")) == owner["metadata"]["uid"]:
        return None
    what = f"{live['kind']} {live['metadata']['name']!r}"
    if reference is None:
        return f"{what} exists and is not controlled by this PgQuartzJob: delete it or rename this one"
    return (
        f"{what} is controlled by {reference.get('kind')} {reference.get('name')!r}"
        f" (uid {reference.get('uid')}): rename this PgQuartzJob"
    )


def apply_rendered(
    store: ObjectStore, rendered: manifests.Rendered, owner: Mapping[str, Any]
) -> dict[str, str]:
    """Write the ConfigMap, then the CronJob, where needed; kind → ``created``, ``updated`` or
    ``unchanged``. Both names are checked before anything is written: :class:`NameConflict` if
    either is taken by an object this owner does not control."""
    objects = (rendered.config_map, rendered.cron_job)
    lives = [
        store.read(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]) for obj in objects
    ]
    for live in lives:
        problem = None if live is None else ownership_problem(live, owner)
        if problem is not None:
            raise NameConflict(problem)
    outcomes: dict[str, str] = {}
    for obj, live in zip(objects, lives, strict=True):
        if live is not None and not differs(live, obj):
            outcomes[obj["kind"]] = "unchanged"
            continue
        store.apply(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], obj)
        outcomes[obj["kind"]] = "created" if live is None else "updated"
    return outcomes


def outcome_messages(outcomes: Mapping[str, str], name: str) -> list[tuple[str, str]]:
    """One event per outcome of a reconciliation (not one per object: each event is a write):
    ``("created", "ConfigMap and CronJob pgqj-x created")``; nothing for unchanged objects."""
    kinds: dict[str, list[str]] = {}
    for kind, outcome in outcomes.items():
        if outcome != "unchanged":
            kinds.setdefault(outcome, []).append(kind)
    return [(outcome, f"{' and '.join(names)} {name} {outcome}") for outcome, names in kinds.items()]


def missing_references(store: ObjectStore, namespace: str, rendered: manifests.Rendered) -> list[str]:
    """What the pods need and cannot find: Secrets (or their keys), the scripts ConfigMap, and
    ``file:`` scripts that are not keys of it. Secret values are never read into a message."""
    missing: list[str] = []
    for reference in rendered.references:
        if reference.kind == "Secret":
            keys = store.secret_keys(namespace, reference.name)
            if keys is None or reference.key not in keys:
                missing.append(f"{reference.describe()} not found in namespace {namespace}")
            continue
        if reference.kind in clusters.KINDS:
            where = reference.namespace or namespace
            if store.read(reference.kind, where, reference.name) is None:
                missing.append(f"{reference.describe()} not found in namespace {where}")
            continue
        scripts = store.read(reference.kind, namespace, reference.name)
        if scripts is None:
            missing.append(f"{reference.describe()} not found in namespace {namespace}")
            continue
        files = set(scripts.get("data") or {}) | set(scripts.get("binaryData") or {})
        missing += validation.script_problems(rendered.config_map, files, reference.name)
    return missing
