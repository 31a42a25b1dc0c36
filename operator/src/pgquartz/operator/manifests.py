"""PgQuartzJob → the ConfigMap and CronJob that run it: a pure, deterministic rendering.

The ConfigMap holds the job file exactly as ``pgquartz -c`` reads it: the
resource's ``spec.job`` plus ``connections`` (passwords as ``passwordEnv``, fed
from the Secrets), ``etcdConfig`` from ``spec.lock`` (key ``<namespace>/<name>``,
or the resource's own key under its namespace; endpoints from the operator's
defaults), ``git`` disabled (pods have no repository) and ``workdir`` on the
scripts ConfigMap when there is one. With
``targets``, the same job file for all and a small file of connection
parameters per target, and an Indexed Job whose pod ``i`` runs the job with
target ``i``'s parameters (``PGQUARTZ_CONNECTION_PARAMS``); with a lock they
all contend for the same key, so they run one at a time ("every node in turn").

The CronJob's pod is fit for the ``restricted`` Pod Security Standard
(non-root, read-only root filesystem with a writable /tmp, no capabilities,
RuntimeDefault seccomp, no service-account token), writes its run summary to
the termination message, logs JSON, and its Job never retries an invalid job
file or a role mismatch (``podFailurePolicy`` on the runner's exit codes).

Children carry only ``pgquartz.io/…`` labels and an ownerReference: never the
resource's own labels (Argo CD's tracking label would make it prune them).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from typing import Any

import yaml

from pgquartz.operator import clusters, names, resource
from pgquartz.operator import policy as policies
from pgquartz.runner.model import ExitCode, durations
from pgquartz.runner.plan import matrix

JOB_DIR = "/etc/pgquartz/job"
SCRIPTS_DIR = "/etc/pgquartz/scripts"
CA_DIR = "/etc/pgquartz/ca"
"""Where a cluster's server CA is mounted, a folder per connection."""
LABEL_NAME = "pgquartz.io/job"
"""The resource's name, or for long names a digest of it (label values have 63 characters)."""
ANNOTATION_NAME = "pgquartz.io/job-name"
"""The resource's full name, on every object the operator makes and on the runs' Jobs."""
ANNOTATION_RENDERED = "pgquartz.io/rendered"
"""A digest of what the operator last wrote: a changed rendering is written again (and fields it no
longer renders are dropped by server-side apply)."""
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "pgquartz-operator"
RUNNER_UID = 65532
TTL_AFTER_FINISHED = 7 * 24 * 3600
BACKOFF_LIMIT = 2
DEADLINE_SLACK = 120  # seconds past the job's own timeout, so the runner's timeout reports first
NEVER_RETRY = (ExitCode.INVALID_JOB, ExitCode.ROLE_MISMATCH)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """The operator's configuration: what fills what a resource leaves out, and what it may ask for."""

    image: str = "pgquartz/runner:latest"
    etcd_endpoints: tuple[str, ...] = ()
    policy: policies.Policy = dataclasses.field(default_factory=policies.Policy)
    max_instances: int = matrix.MAX_INSTANCES
    validation_seconds: float = 5.0
    """How long checking one resource's job may take (pgquartz.operator.validation)."""


@dataclasses.dataclass(frozen=True)
class Rendered:
    config_map: dict[str, Any]
    cron_job: dict[str, Any]
    references: tuple[resource.Reference, ...] = ()
    """Secrets and ConfigMaps the pods need that the operator does not make."""
    spec: resource.PgQuartzJobSpec | None = None
    """The spec as the operator read it."""


def job_file(
    spec: resource.PgQuartzJobSpec,
    *,
    namespace: str,
    name: str,
    defaults: Defaults,
) -> dict[str, Any]:
    """The job file's content (as data)."""
    body: dict[str, Any] = spec.job.to_data(exclude_defaults=True)
    body["git"] = {"disable": True}
    if spec.scripts is not None:
        body["workdir"] = SCRIPTS_DIR
    connections: dict[str, Any] = {}
    for connection_name, connection in spec.connections.items():
        params = {**connection.params, **connection.address(namespace)}
        if connection.ca_secret() is not None:
            params["sslrootcert"] = f"{CA_DIR}/{connection_name}/ca.crt"
        entry: dict[str, Any] = {"role": connection.role.value, "conn_params": params}
        if connection.on_failover is not None:
            entry["onFailover"] = connection.on_failover.value
        if connection.retry is not None:
            entry["retry"] = connection.retry.to_data(exclude_defaults=True)
        if connection.password_secret() is not None:
            entry["passwordEnv"] = names.password_variable(connection_name)
        connections[connection_name] = entry
    if connections:
        body["connections"] = connections
    if spec.lock is not None:
        endpoints = spec.lock.endpoints or list(defaults.etcd_endpoints)
        body["etcdConfig"] = {
            "endpoints": endpoints,
            "lockKey": policies.lock_key(
                spec.lock.key, namespace=namespace, name=name, policy=defaults.policy
            ),
            "lockTimeout": durations.format(spec.lock.ttl),
        }
        if spec.lock.budget is not None:
            body["etcdConfig"]["budget"] = policies.budget(
                spec.lock.budget.slots, spec.lock.budget.key, namespace=namespace, policy=defaults.policy
            )
    return body


def _target_file(name: str, index: int | str) -> str:
    """A target's connection parameters (``PGQUARTZ_CONNECTION_PARAMS`` for the runner)."""
    return f"{names.job_file_key(name)[: -len('.yml')]}.t{index}.conn"


def _labels(name: str) -> dict[str, str]:
    return {LABEL_NAME: names.label_value(name), LABEL_MANAGED: MANAGER}


def _annotations(name: str) -> dict[str, str]:
    return {ANNOTATION_NAME: name}


def rendered_digest(obj: Mapping[str, Any]) -> str:
    """The digest of a rendered object, as its ``pgquartz.io/rendered`` annotation holds it."""
    metadata = {
        **obj["metadata"],
        "annotations": {
            key: value
            for key, value in (obj["metadata"].get("annotations") or {}).items()
            if key != ANNOTATION_RENDERED
        },
    }
    return names.digest(json.dumps({**obj, "metadata": metadata}, sort_keys=True))


def _stamped(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_RENDERED] = rendered_digest(obj)
    return obj


def _owner(owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    metadata = owner["metadata"]
    return [
        {
            "apiVersion": f"{resource.GROUP}/{resource.VERSION}",
            "kind": resource.KIND,
            "name": metadata["name"],
            "uid": metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter where PyYAML has it: the same text as the pure-Python one, a tenth of the CPU."""


def _yaml(content: Any) -> str:
    text: str = yaml.dump(content, Dumper=_DUMPER, sort_keys=False)
    return text


def render(
    obj: Mapping[str, Any], *, defaults: Defaults, instances: list[clusters.Instance] | None = None
) -> Rendered:
    """A PgQuartzJob (as the API returns it) → its ConfigMap and CronJob; ``instances``: the pods of its
    ``targetsFrom`` cluster now, one target each."""
    metadata = obj["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    spec = resource.PgQuartzJobSpec.model_validate(obj["spec"])
    if spec.targets_from is not None:
        if not instances:  # the handlers list them first, and render nothing without any
            raise ValueError("a spec with targetsFrom is rendered with its cluster's instances")
        spec = spec.with_instances(instances)
    child = names.child_name(name)
    content = job_file(spec, namespace=namespace, name=name, defaults=defaults)
    files = {names.job_file_key(name): _yaml(content)}
    for index, target in enumerate(spec.targets):
        files[_target_file(name, index)] = _yaml(dict(target.connections))
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": child,
            "namespace": namespace,
            "labels": _labels(name),
            "annotations": _annotations(name),
            "ownerReferences": _owner(obj),
        },
        "data": files,
    }
    cron_job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": child,
            "namespace": namespace,
            "labels": _labels(name),
            "annotations": _annotations(name),
            "ownerReferences": _owner(obj),
        },
        "spec": _cron_spec(spec, name=name, child=child, defaults=defaults),
    }
    return Rendered(
        config_map=_stamped(config_map),
        cron_job=_stamped(cron_job),
        references=tuple(spec.references()),
        spec=spec,
    )


def _cron_spec(
    spec: resource.PgQuartzJobSpec, *, name: str, child: str, defaults: Defaults
) -> dict[str, Any]:
    cron: dict[str, Any] = {
        "schedule": spec.schedule,
        "suspend": spec.suspend,
        "concurrencyPolicy": spec.concurrency_policy.value,
        "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
        "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": _labels(name), "annotations": _annotations(name)},
            "spec": job_spec(spec, name=name, child=child, defaults=defaults),
        },
    }
    if spec.time_zone is not None:
        cron["timeZone"] = spec.time_zone
    if spec.starting_deadline_seconds is not None:
        cron["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    return cron


RUN_NOW = "pgquartz.io/run-now"


RUN_NOW_SHOWN = 63
"""A run-now value longer than this is remembered and shown as its digest."""


def run_now_token(request: str) -> str:
    """The run-now value as status, the Job's annotation, events and logs show it: bounded."""
    return request if len(request) <= RUN_NOW_SHOWN else f"sha256:{names.digest(request, 40)}"


def manual_job(owner: Mapping[str, Any], cron_job: Mapping[str, Any], *, request: str) -> dict[str, Any]:
    """One Job for the ``pgquartz.io/run-now`` value ``request``, from the template of the CronJob
    in the cluster: a manual run runs exactly what the last accepted reconcile wrote (a spec the
    operator refused never reaches a pod this way)."""
    metadata = owner["metadata"]
    child = cron_job["metadata"]["name"]
    template = cron_job["spec"]["jobTemplate"]
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    annotations = dict((template.get("metadata") or {}).get("annotations") or {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.run_now_job_name(child, request, str(metadata.get("resourceVersion", ""))),
            "namespace": metadata["namespace"],
            "labels": {**labels, "pgquartz.io/trigger": "run-now"},
            "annotations": {**annotations, RUN_NOW: run_now_token(request)},
            "ownerReferences": _owner(owner),
        },
        "spec": _template_spec(template["spec"]),
    }


_SERVER_SET = ("selector", "manualSelector")
_SERVER_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)


def _template_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A CronJob's jobTemplate spec as a new Job's spec: without what the server sets per Job."""
    result = {key: value for key, value in spec.items() if key not in _SERVER_SET}
    template = dict(result.get("template") or {})
    template_metadata = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (template_metadata.get("labels") or {}).items() if k not in _SERVER_LABELS}
    template["metadata"] = {**template_metadata, "labels": labels}
    result["template"] = template
    return result


def job_spec(spec: resource.PgQuartzJobSpec, *, name: str, child: str, defaults: Defaults) -> dict[str, Any]:
    """The Job's spec (also used as-is for manual runs)."""
    job: dict[str, Any] = {
        "backoffLimit": BACKOFF_LIMIT,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": "runner",
                        "operator": "In",
                        "values": [int(code) for code in NEVER_RETRY],
                    },
                },
                # status is required by the API of 1.25-1.34 (a CronJob gets no Job defaults)
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": _pod_metadata(spec, name),
            "spec": _pod_spec(spec, name=name, child=child, defaults=defaults),
        },
    }
    timeout: datetime.timedelta | None = getattr(spec.job, "timeout", None)  # JobBody is built at import
    if timeout is not None:
        job["activeDeadlineSeconds"] = int(timeout.total_seconds()) + DEADLINE_SLACK
    if spec.targets:
        job["completionMode"] = "Indexed"
        job["completions"] = len(spec.targets)
        job["parallelism"] = len(spec.targets)
    return job


def _pod_metadata(spec: resource.PgQuartzJobSpec, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"labels": _labels(name)}
    if spec.pod_template is not None and spec.pod_template.annotations:
        metadata["annotations"] = dict(spec.pod_template.annotations)
    return metadata


def _pod_spec(spec: resource.PgQuartzJobSpec, *, name: str, child: str, defaults: Defaults) -> dict[str, Any]:
    job_path = f"{JOB_DIR}/{names.job_file_key(name)}"
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if defaults.max_instances != matrix.MAX_INSTANCES:  # the runner checks it again
        env.append({"name": "PGQUARTZ_MAX_INSTANCES", "value": str(defaults.max_instances)})
    if spec.targets:
        env.append(
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            }
        )
        # an env value may refer to one defined before it
        target_file = f"{JOB_DIR}/{_target_file(name, '$(JOB_COMPLETION_INDEX)')}"
        env.append({"name": "PGQUARTZ_CONNECTION_PARAMS", "value": target_file})
    for connection_name, connection in spec.connections.items():
        secret = connection.password_secret()
        if secret is not None:
            env.append(
                {
                    "name": names.password_variable(connection_name),
                    "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
                }
            )
    mounts = [
        {"name": "job", "mountPath": JOB_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "job", "configMap": {"name": child}},
        {"name": "tmp", "emptyDir": {}},
    ]
    for index, (connection_name, connection) in enumerate(spec.connections.items()):
        ca = connection.ca_secret()
        if ca is not None:  # the cluster's server CA, for sslmode verify-ca/verify-full
            mounts.append(
                {"name": f"ca-{index}", "mountPath": f"{CA_DIR}/{connection_name}", "readOnly": True}
            )
            volumes.append(
                {
                    "name": f"ca-{index}",
                    "secret": {
                        "secretName": ca,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "defaultMode": 0o444,
                    },
                }
            )
    if spec.scripts is not None:
        mounts.append({"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True})
        volumes.append(
            {"name": "scripts", "configMap": {"name": spec.scripts.config_map_ref.name, "defaultMode": 0o555}}
        )
    container: dict[str, Any] = {
        "name": "runner",
        "image": spec.image or defaults.image,
        "args": ["run", job_path, "--log-format", "json", "--summary-file", "/dev/termination-log"],
        # The runner's directory: with scripts, their folder (the job's workdir); else the job file's
        # mount (a job file's own directory is the mount's hidden timestamped one).
        "workingDir": SCRIPTS_DIR if spec.scripts is not None else JOB_DIR,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.resources is not None:
        container["resources"] = spec.resources.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    template = spec.pod_template
    if template is not None:
        if template.node_selector:
            pod["nodeSelector"] = dict(template.node_selector)
        if template.tolerations:
            pod["tolerations"] = [
                toleration.model_dump(by_alias=True, exclude_none=True, mode="json")
                for toleration in template.tolerations
            ]
        if template.service_account_name:
            pod["serviceAccountName"] = template.service_account_name
    return pod
