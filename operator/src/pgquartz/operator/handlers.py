"""kopf handlers: keep each PgQuartzJob's ConfigMap and CronJob as rendered, and report it in status.

Reconciliation reacts to ``spec`` only (``field="spec"``): a change of labels or
annotations, such as Argo CD's tracking annotation or kubectl's
``last-applied-configuration``, renders nothing again. Children are written by
server-side apply and only when they drifted (pgquartz.operator.children), never
when another resource controls their name (``NameConflict``). The user's spec is
never edited; problems land in the ``Ready`` condition and one Warning event,
never in a crash loop or a half-made object: nothing is written unless the
rendering, the operator's policy (``NotAllowed``), the sizes and the runner's own
checks of the job file (within a time budget) all pass. A write the API server
refuses is ``Rejected``; only transient failures are retried, with back-off.
Referenced Secrets and ConfigMaps that are missing (``MissingReference``), and
names taken by others, are checked again on a timer. ``observedGeneration``
follows every generation, also when a spec changes and changes back unseen.

Manual runs (``pgquartz.io/run-now``) start a Job from the CronJob in the
cluster, i.e. from what reconcile accepted, and only when ``Ready`` for the
current generation. The handlers also follow the CronJobs they own (a deleted or
hand-edited one is put back) and the Jobs of runs whose owner chain is intact
(their outcome goes to status, events and metrics).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
import pydantic

from pgquartz.operator import (
    bookkeeping,
    children,
    clusters,
    events,
    kubeapi,
    manifests,
    names,
    policy,
    resource,
    status,
    validation,
    watching,
)
from pgquartz.operator import metrics as operator_metrics
from pgquartz.runner.model.base import problems_of

ObjectStore = children.ObjectStore


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


MISSING_REFERENCE = "MissingReference"
NAME_CONFLICT = "NameConflict"
REJECTED = "Rejected"
RECHECKED = (MISSING_REFERENCE, NAME_CONFLICT)
"""Ready reasons that depend on other objects: rechecked on a timer until they are fixed."""
MAX_BACKOFF = 300.0


def spec_problem(error: pydantic.ValidationError) -> tuple[str, str]:
    """The ``Ready`` reason and message for a spec the resource model refuses."""
    problems = problems_of(error, resource.PgQuartzJobSpec)  # in the runner's words, spec.job's too
    message = "; ".join(
        f"{'.'.join(str(part) for part in problem.path) or 'spec'}: {problem.message}" for problem in problems
    )
    schedule_only = all(problem.path[:1] in (("schedule",), ("timeZone",)) for problem in problems)
    return ("InvalidSchedule" if schedule_only else "InvalidSpec"), message[:1024]


MAX_TARGETS_SHOWN = 50
"""Targets ``status.targets`` lists by name (a cluster's instances, for ``targetsFrom``)."""


def current_instances(
    store: ObjectStore, body: Mapping[str, Any]
) -> tuple[list[clusters.Instance] | None, str]:
    """The instance pods of the cluster a resource's ``targetsFrom`` names (None: it names none, or
    the spec does not parse: the rendering says why), and why it must wait if there are none."""
    if not (body.get("spec") or {}).get("targetsFrom"):
        return None, ""  # most resources: no second validation of their spec on every reconcile
    try:
        spec = resource.PgQuartzJobSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return None, ""
    if spec.targets_from is None:
        return None, ""
    cluster = spec.targets_from.cluster
    namespace = cluster.namespace_or(body["metadata"]["namespace"])
    selector = clusters.selector(cluster.kind, cluster.name, spec.targets_from.instances.value)
    instances = clusters.instances_of(store.list("Pod", namespace, selector))
    if instances:
        return instances, ""
    return None, (
        f"no {spec.targets_from.instances.value} instances of {cluster.describe()} in namespace {namespace}"
        f" (pods {selector}): runs wait until it has some"
    )


def backoff(retry: int) -> float:
    """Seconds before retrying a transient API failure: 1, 2, 4 … up to five minutes."""
    return float(min(2 ** min(retry, 16), MAX_BACKOFF))


def owner_name(obj: Mapping[str, Any]) -> str | None:
    """The PgQuartzJob a child or a run belongs to, from its annotation (older objects: the label)."""
    metadata = obj.get("metadata") or {}
    named = (metadata.get("annotations") or {}).get(manifests.ANNOTATION_NAME)
    return str(named) if named else (metadata.get("labels") or {}).get(manifests.LABEL_NAME)


def register(
    registry: kopf.OperatorRegistry,
    *,
    store: Callable[[], ObjectStore],
    defaults: manifests.Defaults,
    metrics: operator_metrics.Metrics | None = None,
    recheck_interval: float = 30.0,
) -> None:
    """Register the PgQuartzJob handlers on ``registry``.

    ``recheck_interval``: how often a resource waiting for a Secret or ConfigMap it references,
    or for a name taken by another object, is checked again (the operator watches neither).
    """
    where = (resource.GROUP, resource.VERSION, resource.PLURAL)

    def announce(
        owner: Mapping[str, Any], logger: kopf.Logger, *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Post an Event about ``owner`` on the thread's own connection. If the API fails for now, kopf's
        poster takes it over (it retries with back-off, off this thread); a refused one is logged.
        Either way, an event is never the reason for a reconciliation to fail."""
        try:
            store().create(
                "Event",
                owner["metadata"]["namespace"],
                events.event(owner, warning=warning, reason=reason, message=message, now=_now()),
            )
        except kubeapi.Transient:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, owner)),
                type="Warning" if warning else "Normal",
                reason=reason,
                message=message,
            )
        except kubeapi.Refused as error:
            logger.warning(f"the event {reason!r} could not be posted: {error}")

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
        digest = bookkeeping.spec_digest(dict(body.get("spec") or {}))
        if existing.get("observedSpec") != digest:
            patch.status["observedSpec"] = digest
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
            announce(body, logger, reason=reason, message=message, warning=True)
            logger.warning(f"not ready ({reason}): {message}")

    def accepted(
        body: Mapping[str, Any], instances: list[clusters.Instance] | None = None
    ) -> tuple[manifests.Rendered | None, str, str]:
        """The rendering of ``body`` if the operator accepts it, else None, the reason and message."""
        try:
            rendered = manifests.render(body, defaults=defaults, instances=instances)
        except pydantic.ValidationError as error:
            return None, *spec_problem(error)
        namespace = body["metadata"]["namespace"]
        not_allowed = (
            policy.problems(rendered.spec, defaults.policy, namespace=namespace)
            if rendered.spec is not None
            else []
        )
        if not_allowed:
            return None, "NotAllowed", "; ".join(not_allowed)[:1024]
        too_large = validation.size_problems(rendered.config_map)
        if too_large:
            return None, "InvalidSpec", "; ".join(too_large)
        problems = validation.job_file_problems(
            rendered.config_map,
            max_instances=defaults.max_instances,
            budget_seconds=defaults.validation_seconds,
        )
        if problems:
            return None, "InvalidJob", "; ".join(problems)[:1024]
        return rendered, "", ""

    def count_error(meta: kopf.Meta) -> None:
        if metrics is not None:
            metrics.reconcile_errors.labels(namespace=meta.get("namespace"), name=meta.get("name")).inc()

    def reconcile(
        body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger, retry: int = 0
    ) -> None:
        """Render, check, apply; nothing is written unless the whole rendering is valid. A write the
        API server refuses is a ``Rejected`` condition; only transient failures are retried."""
        api = store()
        try:
            instances, waiting = current_instances(api, body)
        except kubeapi.Transient as error:
            count_error(meta)
            raise kopf.TemporaryError(str(error), delay=backoff(retry)) from None
        if waiting:
            set_ready(body, patch, logger, ready=False, reason=MISSING_REFERENCE, message=waiting)
            return
        rendered, reason, message = accepted(body, instances)
        if rendered is None:
            set_ready(body, patch, logger, ready=False, reason=reason, message=message)
            return
        if instances is not None:
            targets = [target.name for target in rendered.spec.targets] if rendered.spec else []
            if (body.get("status") or {}).get("targets") != targets[:MAX_TARGETS_SHOWN]:
                patch.status["targets"] = targets[:MAX_TARGETS_SHOWN]
        namespace, child = rendered.cron_job["metadata"]["namespace"], rendered.cron_job["metadata"]["name"]
        try:
            outcomes = children.apply_rendered(api, rendered, body)
            missing = children.missing_references(api, namespace, rendered)
        except children.NameConflict as conflict:
            set_ready(body, patch, logger, ready=False, reason=NAME_CONFLICT, message=str(conflict)[:1024])
            return
        except kubeapi.Refused as refused:
            count_error(meta)
            message = f"the API server refused the {refused.status} ({refused.reason}): {refused.message}"
            set_ready(body, patch, logger, ready=False, reason=REJECTED, message=message[:1024])
            return
        except kubeapi.Transient as error:
            count_error(meta)
            delay = backoff(retry)
            logger.warning(f"the API is not answering as it should ({error}): retrying in {delay:.0f} s")
            raise kopf.TemporaryError(str(error), delay=delay) from None
        for outcome, message in children.outcome_messages(outcomes, child):
            announce(body, logger, reason=outcome.capitalize(), message=message)
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
        body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger, retry: int, **_: Any
    ) -> None:
        reconcile(body, meta, patch, logger, retry)

    def generation_unobserved(body: kopf.Body, **_: Any) -> bool:
        """The generation moved, but status already describes this very spec (its digest, written in
        the same status write as the conditions, so no half-written state can pass for it)."""
        generation = body.get("metadata", {}).get("generation")
        current = body.get("status") or {}
        observed = current.get("observedGeneration")
        if observed is None or generation == observed:
            return False  # the common case, without hashing the spec
        return bool(current.get("observedSpec") == bookkeeping.spec_digest(dict(body.get("spec") or {})))

    def generation_changed_back(body: kopf.Body, patch: kopf.Patch) -> None:
        """``suspend`` flipped and flipped back before the operator looked: kopf sees no change and
        there is nothing to render, but status must say it saw the new generation."""
        generation = int(body["metadata"]["generation"])
        patch.status["observedGeneration"] = generation
        conditions = [dict(c) for c in (body.get("status", {}).get("conditions") or [])]
        for condition in conditions:
            if condition.get("type") == status.READY:
                condition["observedGeneration"] = generation
        patch.status["conditions"] = conditions

    def waiting_for_others(body: kopf.Body, **_: Any) -> bool:
        ready = status.find(body.get("status", {}).get("conditions", []) or [], status.READY)
        return bool(ready.get("status") == "False" and ready.get("reason") in RECHECKED)

    @kopf.timer(
        *where,
        interval=recheck_interval,
        initial_delay=recheck_interval,
        when=waiting_for_others,
        registry=registry,
    )
    def recheck(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        """A referenced Secret or ConfigMap was missing, or a child's name taken: that may be over."""
        reconcile(body, meta, patch, logger)

    def follows_a_cluster(body: kopf.Body, **_: Any) -> bool:
        return bool((body.get("spec") or {}).get("targetsFrom")) and not waiting_for_others(body)

    @kopf.timer(
        *where,
        interval=recheck_interval,
        initial_delay=recheck_interval,
        when=follows_a_cluster,
        registry=registry,
    )
    def instances_rechecked(
        body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger, **_: Any
    ) -> None:
        """A targetsFrom cluster's instances are listed again (a label selector for that cluster
        alone, as the server filters it): one added, removed or replaced is rendered within an
        interval, and nothing is written while they stay as they are."""
        reconcile(body, meta, patch, logger)

    def run_now_requested(body: kopf.Body, **_: Any) -> bool:
        request = (body.get("metadata", {}).get("annotations") or {}).get(manifests.RUN_NOW)
        handled = body.get("status", {}).get("handledRunNow")
        return (
            bool(request)
            and manifests.run_now_token(str(request)) != handled
            and not body.get("metadata", {}).get("deletionTimestamp")
        )

    def needs_attention(body: kopf.Body, **_: Any) -> bool:
        return run_now_requested(body) or generation_unobserved(body)

    # kopf's change detection leaves annotations and generations out, so every event is looked at;
    # one filter (kopf prepares the arguments of each filter anew) keeps the handler, its thread and
    # its log line to the events that carry a new run-now request or a generation status lags behind.
    @kopf.on.event(*where, when=needs_attention, registry=registry)
    def event_noticed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        if generation_unobserved(body):
            generation_changed_back(body, patch)
        if run_now_requested(body):
            run_now(body, patch, logger)

    def run_now(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
        """A new ``pgquartz.io/run-now`` value starts one Job with what reconcile accepted; the value
        is remembered in status, so re-applying the same manifest (GitOps) never starts it again."""
        request = str(body["metadata"]["annotations"][manifests.RUN_NOW])
        token = manifests.run_now_token(request)
        generation = body.get("metadata", {}).get("generation")
        ready = status.find(body.get("status", {}).get("conditions", []) or [], status.READY)
        if ready.get("observedGeneration") != generation:
            return  # this spec is not reconciled yet: its status write brings the request back
        api = store()
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        # The event may be older than our own last status write (a Job's status patch can land
        # between a run and its handledRunNow): ask the API, or a request runs twice.
        live = api.read(resource.KIND, namespace, name)
        if live is None or not run_now_requested(kopf.Body(cast(kopf.RawBody, live))):
            return
        if (live["metadata"].get("annotations") or {}).get(manifests.RUN_NOW) != request:
            return  # a newer request: its own event follows
        cron_job = None
        if ready.get("status") != "True":
            refusal = f"the PgQuartzJob is not ready ({ready.get('reason')}): {ready.get('message')}"
        else:
            cron_job = api.read("CronJob", namespace, names.child_name(name))
            refusal = "its CronJob is not in place"
            if cron_job is not None and children.ownership_problem(cron_job, body) is not None:
                cron_job = None
        if cron_job is None:
            message = f"run-now {token!r} not started: {refusal}"[:1024]
            announce(body, logger, reason="RunNowRefused", message=message, warning=True)
            logger.warning(message)
            patch.status["handledRunNow"] = token
            return
        job = manifests.manual_job(body, cron_job, request=request)
        if api.read("Job", namespace, job["metadata"]["name"]) is None:
            api.create("Job", namespace, job)
            message = f"Job {job['metadata']['name']} started for run-now {token!r}"
            announce(body, logger, reason="RunNow", message=message)
            logger.info(message)
        patch.status["handledRunNow"] = token

    def owned_pgquartzjob(api: ObjectStore, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """The PgQuartzJob that controls ``obj`` (a CronJob), if it exists and is not being deleted."""
        owner = owner_name(obj)
        if not owner:
            return None
        current = api.read(resource.KIND, namespace, owner)
        if current is None or current.get("metadata", {}).get("deletionTimestamp"):
            return None
        if children.controller_uid(obj) != current["metadata"].get("uid"):
            return None  # not ours, whatever its labels say
        return current

    def changed_or_deleted(event: kopf.RawEvent, namespace: str | None, **_: Any) -> bool:
        return bool(namespace) and event.get("type") in ("MODIFIED", "DELETED")

    @kopf.on.event(
        "batch",
        "v1",
        "cronjobs",
        labels=watching.handler_filter(watching.CRON_JOB_LABELS),
        when=changed_or_deleted,
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
        if kind not in ("MODIFIED", "DELETED") or not namespace:
            return  # the filter lets none of these through
        api = store()
        current = owned_pgquartzjob(api, namespace, body)
        if current is None:
            return  # being deleted (its children go with it), or not ours
        try:
            instances, waiting = current_instances(api, current)
        except kubeapi.Transient as error:
            logger.warning(f"cannot list the instances of {current['metadata']['name']}'s cluster: {error}")
            return
        rendered = None if waiting else accepted(current, instances)[0]
        if rendered is None:
            return  # the resource's Ready condition already says why
        if kind != "DELETED" and not children.differs(body, rendered.cron_job):
            existing = api.read("ConfigMap", namespace, rendered.config_map["metadata"]["name"])
            if existing is not None and not children.differs(existing, rendered.config_map):
                return
        try:
            outcomes = children.apply_rendered(api, rendered, current)
        except (children.NameConflict, kubeapi.Refused) as error:
            logger.warning(f"cannot restore the objects of {current['metadata']['name']}: {error}")
            return
        child = rendered.cron_job["metadata"]["name"]
        for changed, outcome in outcomes.items():
            if outcome != "unchanged":
                message = f"{changed} {child} {'recreated' if outcome == 'created' else 'restored'}"
                announce(current, logger, reason="Restored", message=message)
                logger.info(f"{message}: it was deleted or changed outside the operator")

    def run_of(job: Mapping[str, Any], owner: Mapping[str, Any], cron_job: Mapping[str, Any] | None) -> bool:
        """Whether ``job`` is a run of ``owner``: started by it (run-now), or by ``cron_job``, its own
        CronJob as the cluster has it."""
        reference = children.controller(job)
        if reference is None or owner_name(job) != owner["metadata"]["name"]:
            return False
        if reference.get("kind") == resource.KIND:
            return bool(reference.get("uid") == owner["metadata"]["uid"])
        return bool(
            reference.get("kind") == "CronJob"
            and cron_job is not None
            and reference.get("name") == cron_job["metadata"]["name"]
            and reference.get("uid") == cron_job["metadata"].get("uid")
            and children.controller_uid(cron_job) == owner["metadata"]["uid"]
        )

    @kopf.on.event(
        "batch", "v1", "jobs", labels=watching.handler_filter(watching.JOB_LABELS), registry=registry
    )
    def job_changed(body: kopf.Body, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """A run's Job changed: recompute the owner's run status from all its Jobs and their pods."""
        owner = owner_name(body)
        if not owner or not namespace:
            return
        api = store()
        current = api.read(resource.KIND, namespace, owner)
        if current is None:
            return
        cron_job = api.read("CronJob", namespace, names.child_name(owner))  # once, for every Job below
        if not run_of(body, current, cron_job):
            return  # a Job that only looks like one of its runs is not one
        selector = f"{manifests.LABEL_NAME}={names.label_value(owner)}"
        jobs = [job for job in api.list("Job", namespace, selector) if run_of(job, current, cron_job)]
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
            normal, reason, text = status.event_of(last)
            if metrics is not None:
                metrics.run_finished(
                    namespace=namespace,
                    name=owner,
                    result=last["result"],
                    completed_at=_timestamp(last.get("completionTime")),
                    budget_waited=(last.get("budget") or {}).get("waited"),
                )
            announce(current, logger, reason=reason, message=text, warning=not normal)
        if any(existing.get(key) != value for key, value in patch.items()):
            api.patch_status(namespace, owner, patch)
            logger.info(f"status of {owner} updated from its Jobs")
