"""kopf handlers: keep each PgQuartzJob's ConfigMap and CronJob as rendered, and report it in status.

Reconciliation reacts to ``spec`` only (``field="spec"``): a change of labels or
annotations, such as Argo CD's tracking annotation or kubectl's
``last-applied-configuration``, renders nothing again. Applying is idempotent:
an object is written only when what is in the cluster differs from the
rendering. The user's spec is never edited; problems land in the ``Ready``
condition and a Warning event, never in a crash loop or a half-made object
(nothing is written unless the whole rendering, and the runner's own checks of
the job files, succeeded). Referenced Secrets and ConfigMaps that are missing
make ``Ready`` false and are checked again on a timer until they exist.

Besides the PgQuartzJobs themselves, the handlers follow the CronJobs they own
(a deleted or hand-edited one is put back) and the Jobs of runs (their outcome
goes to status, events and metrics).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import kopf
import pydantic

from pgquartz.operator import manifests, resource, status, validation
from pgquartz.operator import metrics as operator_metrics


class ObjectStore(Protocol):
    """What the handlers need of the API: read, create and replace namespaced objects."""

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None: ...

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A JSON merge patch."""
        ...

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch a PgQuartzJob's status subresource."""
        ...

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The key names of a Secret (never its values), or None if it does not exist."""
        ...


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def differs(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the object in the cluster differs from the rendering in anything we own."""
    meta, wanted_meta = existing.get("metadata", {}), wanted["metadata"]
    if any(meta.get("labels", {}).get(key) != value for key, value in wanted_meta.get("labels", {}).items()):
        return True
    if meta.get("ownerReferences") != wanted_meta.get("ownerReferences"):
        return True
    return any(existing.get(key) != wanted.get(key) for key in ("data", "spec") if key in wanted)


def merge_patch(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that turns ``existing`` into ``wanted`` (keys no longer wanted become null)."""
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        old = existing.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    for key in existing:
        if key not in wanted:
            patch[key] = None
    return patch


def apply(store: ObjectStore, obj: Mapping[str, Any]) -> str:
    """Create or update ``obj`` if needed; returns ``created``, ``updated`` or ``unchanged``."""
    kind, namespace, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
    existing = store.read(kind, namespace, name)
    if existing is None:
        store.create(kind, namespace, obj)
        return "created"
    if not differs(existing, obj):
        return "unchanged"
    patch = {key: merge_patch(existing.get(key) or {}, obj[key]) for key in ("data", "spec") if key in obj}
    metadata = obj["metadata"]
    patch["metadata"] = {
        "labels": metadata.get("labels", {}),
        "ownerReferences": metadata.get("ownerReferences"),
    }
    store.patch(kind, namespace, name, patch)
    return "updated"


def apply_rendered(store: ObjectStore, rendered: manifests.Rendered) -> dict[str, str]:
    """Apply the ConfigMap, then the CronJob; kind → ``created``, ``updated`` or ``unchanged``."""
    return {obj["kind"]: apply(store, obj) for obj in (rendered.config_map, rendered.cron_job)}


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
        scripts = store.read(reference.kind, namespace, reference.name)
        if scripts is None:
            missing.append(f"{reference.describe()} not found in namespace {namespace}")
            continue
        files = set(scripts.get("data") or {}) | set(scripts.get("binaryData") or {})
        missing += validation.script_problems(rendered.config_map, files, reference.name)
    return missing


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


MISSING_REFERENCE = "MissingReference"


def spec_problem(error: pydantic.ValidationError) -> tuple[str, str]:
    """The ``Ready`` reason and message for a spec the resource model refuses."""
    details = error.errors()
    message = "; ".join(
        f"{'.'.join(str(part) for part in detail['loc']) or 'spec'}: {detail['msg']}" for detail in details
    )
    schedule_only = all(detail["loc"][:1] in (("schedule",), ("timeZone",)) for detail in details)
    return ("InvalidSchedule" if schedule_only else "InvalidSpec"), message[:1024]


def register(
    registry: kopf.OperatorRegistry,
    *,
    store: Callable[[], ObjectStore],
    defaults: manifests.Defaults,
    metrics: operator_metrics.Metrics | None = None,
    recheck_interval: float = 30.0,
) -> None:
    """Register the PgQuartzJob handlers on ``registry``.

    ``recheck_interval``: how often a resource waiting for a Secret or ConfigMap it
    references is checked again (only those: the operator does not watch Secrets).
    """
    where = (resource.GROUP, resource.VERSION, resource.PLURAL)

    def set_ready(
        body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, *, ready: bool, reason: str, message: str
    ) -> None:
        """Set ``Ready`` and observedGeneration, only if they change; an event when the condition does."""
        generation = int(body.get("metadata", {}).get("generation") or 1)
        existing = body.get("status", {}) or {}
        old = existing.get("conditions", []) or []
        new = status.condition(
            old,
            type_=status.READY,
            status=ready,
            reason=reason,
            message=message,
            generation=generation,
            now=_now(),
        )
        if new != old:
            patch.status["conditions"] = new
        if existing.get("observedGeneration") != generation:
            patch.status["observedGeneration"] = generation
        before = status.find(old, status.READY)
        if (before.get("status"), before.get("reason"), before.get("message")) == (
            "True" if ready else "False",
            reason,
            message,
        ):
            return
        if ready:
            logger.info(message)
        else:
            kopf.warn(body, reason=reason, message=message)
            logger.warning(f"not ready ({reason}): {message}")

    def reconcile(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger) -> None:
        """Render, check, apply; nothing is written unless the whole rendering is valid."""
        try:
            rendered = manifests.render(body, defaults=defaults)
        except pydantic.ValidationError as error:
            reason, message = spec_problem(error)
            set_ready(body, patch, logger, ready=False, reason=reason, message=message)
            return
        problems = validation.job_file_problems(rendered.config_map)
        if problems:
            set_ready(
                body, patch, logger, ready=False, reason="InvalidJob", message="; ".join(problems)[:1024]
            )
            return
        api = store()
        namespace, child = rendered.cron_job["metadata"]["namespace"], rendered.cron_job["metadata"]["name"]
        try:
            outcomes = apply_rendered(api, rendered)
            missing = missing_references(api, namespace, rendered)
        except Exception:
            if metrics is not None:
                metrics.reconcile_errors.labels(namespace=meta.get("namespace"), name=meta.get("name")).inc()
            raise  # kopf retries with back-off
        for kind, outcome in outcomes.items():
            if outcome != "unchanged":
                kopf.info(body, reason=outcome.capitalize(), message=f"{kind} {child} {outcome}")
        if missing:
            message = f"{'; '.join(missing)}: runs fail until this is fixed"[:1024]
            set_ready(body, patch, logger, ready=False, reason=MISSING_REFERENCE, message=message)
        else:
            message = f"ConfigMap and CronJob {child} are in place"
            set_ready(body, patch, logger, ready=True, reason="ObjectsInPlace", message=message)

    @kopf.on.resume(*where, registry=registry)
    @kopf.on.create(*where, registry=registry)
    @kopf.on.update(*where, field="spec", registry=registry)
    def spec_changed(
        body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger, **_: Any
    ) -> None:
        reconcile(body, meta, patch, logger)

    def waiting_for_reference(body: kopf.Body, **_: Any) -> bool:
        ready = status.find(body.get("status", {}).get("conditions", []) or [], status.READY)
        return bool(ready.get("status") == "False" and ready.get("reason") == MISSING_REFERENCE)

    @kopf.timer(
        *where,
        interval=recheck_interval,
        initial_delay=recheck_interval,
        when=waiting_for_reference,
        registry=registry,
    )
    def recheck(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        """A referenced Secret or ConfigMap was missing: it may exist now."""
        reconcile(body, meta, patch, logger)

    def run_now_requested(body: kopf.Body, **_: Any) -> bool:
        request = (body.get("metadata", {}).get("annotations") or {}).get(manifests.RUN_NOW)
        handled = body.get("status", {}).get("handledRunNow")
        return bool(request) and request != handled and not body.get("metadata", {}).get("deletionTimestamp")

    # kopf's change detection leaves annotations out, so every event is looked at; the filter
    # keeps the handler (and its log line) to events that carry a new request.
    @kopf.on.event(*where, when=run_now_requested, registry=registry)
    def run_now(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        """A new ``pgquartz.io/run-now`` value starts one Job; the value is remembered in status,
        so re-applying the same manifest (GitOps) never starts it again."""
        request = body["metadata"]["annotations"][manifests.RUN_NOW]
        try:
            job = manifests.manual_job(body, request=request, defaults=defaults)
        except pydantic.ValidationError:
            return  # the reconcile handler reports the invalid spec
        api = store()
        if api.read("Job", job["metadata"]["namespace"], job["metadata"]["name"]) is None:
            api.create("Job", job["metadata"]["namespace"], job)
            kopf.info(
                body,
                reason="RunNow",
                message=f"Job {job['metadata']['name']} started for run-now {request!r}",
            )
            logger.info(f"started Job {job['metadata']['name']} for run-now {request!r}")
        patch.status["handledRunNow"] = request

    @kopf.on.event(
        "batch",
        "v1",
        "cronjobs",
        labels={manifests.LABEL_NAME: kopf.PRESENT, manifests.LABEL_MANAGED: manifests.MANAGER},
        registry=registry,
    )
    def cron_job_changed(
        event: kopf.RawEvent, body: kopf.Body, namespace: str | None, logger: kopf.Logger, **_: Any
    ) -> None:
        """An owned CronJob was deleted or edited by hand: put it (and its ConfigMap) back.

        The CronJob controller also writes its status at every scheduled run, so a deleted or
        edited ConfigMap is put back no later than the next run. The initial listing is left to
        the resume handler, which reconciles every resource anyway, and ADDED events follow the
        operator's own creations."""
        kind = event.get("type")
        owner = (body.get("metadata", {}).get("labels") or {}).get(manifests.LABEL_NAME)
        if kind not in ("MODIFIED", "DELETED") or not owner or not namespace:
            return
        api = store()
        current = api.read(resource.KIND, namespace, owner)
        if current is None or current.get("metadata", {}).get("deletionTimestamp"):
            return  # being deleted: its children go with it
        try:
            rendered = manifests.render(current, defaults=defaults)
        except pydantic.ValidationError:
            return  # the resource's Ready condition already says why
        if validation.job_file_problems(rendered.config_map):
            return
        if kind != "DELETED" and not differs(body, rendered.cron_job):
            existing = api.read("ConfigMap", namespace, rendered.config_map["metadata"]["name"])
            if existing is not None and not differs(existing, rendered.config_map):
                return
        outcomes = apply_rendered(api, rendered)
        child = rendered.cron_job["metadata"]["name"]
        for changed, outcome in outcomes.items():
            if outcome != "unchanged":
                message = f"{changed} {child} {'recreated' if outcome == 'created' else 'restored'}"
                kopf.info(kopf.Body(cast(kopf.RawBody, current)), reason="Restored", message=message)
                logger.info(f"{message}: it was deleted or changed outside the operator")

    @kopf.on.event("batch", "v1", "jobs", labels={manifests.LABEL_NAME: kopf.PRESENT}, registry=registry)
    def job_changed(body: kopf.Body, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """A run's Job changed: recompute the owner's run status from all its Jobs and their pods."""
        owner = (body.get("metadata", {}).get("labels") or {}).get(manifests.LABEL_NAME)
        if not owner or not namespace:
            return
        api = store()
        current = api.read(resource.KIND, namespace, owner)
        if current is None:
            return
        selector = f"{manifests.LABEL_NAME}={owner}"
        jobs = api.list("Job", namespace, selector)
        summaries = {}
        for job in jobs:
            name = job["metadata"]["name"]
            for pod in api.list("Pod", namespace, f"job-name={name}"):
                for container in pod.get("status", {}).get("containerStatuses", []) or []:
                    message = (container.get("state", {}).get("terminated") or {}).get("message")
                    found = status.run_summary(message)
                    if found is not None:
                        summaries[name] = found
        existing = current.get("status", {}) or {}
        patch = status.runs_status(
            jobs,
            summaries,
            existing=existing,
            generation=int(current["metadata"].get("generation") or 1),
            now=_now(),
        )
        if not patch:
            return
        last, previous = patch.get("lastRun"), existing.get("lastRun") or {}
        if last and (last.get("job"), last.get("result")) != (previous.get("job"), previous.get("result")):
            succeeded = last["result"] == "Succeeded"
            text = last.get("message") or f"Job {last['job']} {last['result'].lower()}"
            if metrics is not None:
                metrics.run_finished(
                    namespace=namespace,
                    name=owner,
                    result=last["result"],
                    completed_at=_timestamp(last.get("completionTime")),
                )
            if succeeded:
                kopf.info(kopf.Body(cast(kopf.RawBody, current)), reason="RunSucceeded", message=text)
            else:
                kopf.warn(kopf.Body(cast(kopf.RawBody, current)), reason="RunFailed", message=text)
        if any(existing.get(key) != value for key, value in patch.items()):
            api.patch_status(namespace, owner, patch)
            logger.info(f"status of {owner} updated from its Jobs")
