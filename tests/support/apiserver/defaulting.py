"""Defaulting: the fields an API server fills in on every write, so stored objects look as on a cluster.

A real API server defaults every object it stores (for built-in kinds the
generated ``SetObjectDefaults_*`` functions; for custom resources the
``default`` values of the CRD's structural schema), so what the operator reads
back is never what it sent. An operator that compares whole specs sees drift at
every reconcile; this module makes the emulator show that.

Sources (kubernetes/kubernetes, release-1.30…1.37):
- ``pkg/apis/batch/v1/defaults.go``: ``SetDefaults_CronJob``, ``SetDefaults_Job``;
  ``pkg/apis/apps/v1/defaults.go``: ``SetDefaults_Deployment``.
- ``pkg/apis/core/v1/defaults.go``: ``SetDefaults_PodSpec``, ``SetDefaults_Container``,
  ``SetDefaults_Volume`` (via ``SetDefaults_ConfigMapVolumeSource``, ``SetDefaults_SecretVolumeSource``),
  ``SetDefaults_ObjectFieldSelector``, ``SetDefaults_ContainerPort``, ``SetDefaults_Probe``,
  ``SetDefaults_HTTPGetAction``.
- ``pkg/registry/batch/job/strategy.go``: ``generateSelector`` (the Job's selector and the
  ``controller-uid`` / ``job-name`` labels on its pod template).
- ``staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting``: CRD defaults.

A CronJob's ``jobTemplate.spec`` gets the pod-template defaults but not ``SetDefaults_Job`` (that
takes a Job, not a JobSpec): that is why a CronJob's ``podFailurePolicy`` must spell out
``onPodConditions[].status`` on 1.25–1.34 (kubernetes/kubernetes#131512).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tests.support.apiserver import schemas

DEFAULT_MODE = 0o644  # 420: SetDefaults_ConfigMapVolumeSource, SetDefaults_SecretVolumeSource


def default(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` (a new dict) with the defaults its kind gets from the API server."""
    obj = copy.deepcopy(obj)
    kind = obj.get("kind")
    spec = obj.get("spec")
    if kind == "PgQuartzJob":
        return _crd_defaults(obj, schemas.crd_schema())
    if not isinstance(spec, dict):
        return obj
    if kind == "CronJob":
        _cron_job(spec)
    elif kind == "Job":
        _job(spec)
        _job_selector(obj)
    elif kind == "Deployment":
        _deployment(spec)
    elif kind == "Pod":
        _pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)  # SetDefaults_Pod
        spec.setdefault("priority", 0)
    return obj


def _cron_job(spec: dict[str, Any]) -> None:
    # SetDefaults_CronJob
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    template = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    if isinstance(template, dict):
        _pod_spec(template)


def _deployment(spec: dict[str, Any]) -> None:
    # pkg/apis/apps/v1/defaults.go SetDefaults_Deployment
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", "25%")
        strategy["rollingUpdate"].setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template", {}).get("spec")
    if isinstance(template, dict):
        _pod_spec(template)


def _job(spec: dict[str, Any]) -> None:
    # SetDefaults_Job
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    policy = spec.get("podFailurePolicy")
    if isinstance(policy, dict):
        for rule in policy.get("rules") or []:
            for pattern in rule.get("onPodConditions") or []:
                pattern.setdefault("status", "True")
    # JobPodReplacementPolicy (beta and on since 1.29)
    spec.setdefault("podReplacementPolicy", "Failed" if policy else "TerminatingOrFailed")
    template = spec.get("template", {}).get("spec")
    if isinstance(template, dict):
        _pod_spec(template)


def _job_selector(obj: dict[str, Any]) -> None:
    """generateSelector: the controller's own labels on the pod template, and a selector for them."""
    spec, metadata = obj["spec"], obj.get("metadata", {})
    if spec.get("manualSelector") or "uid" not in metadata:
        return
    uid, name = metadata["uid"], metadata.get("name", "")
    labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    labels.setdefault("controller-uid", uid)
    labels.setdefault("batch.kubernetes.io/controller-uid", uid)
    labels.setdefault("job-name", name)
    labels.setdefault("batch.kubernetes.io/job-name", name)
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})


def _pod_spec(spec: dict[str, Any]) -> None:
    # SetDefaults_PodSpec
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            _container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", DEFAULT_MODE)


_DECIMAL = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY = {60: "Ei", 50: "Pi", 40: "Ti", 30: "Gi", 20: "Mi", 10: "Ki"}


def canonical_quantity(text: Any) -> Any:
    """A quantity as the API server stores it (``resource.Quantity``'s canonical form, for the forms
    pods use): ``1000m`` → ``1``, ``0.5`` → ``500m``, ``1024Mi`` → ``1Gi``, ``2000`` → ``2k``."""
    from pgquartz.operator import quantities  # the parser; the formatting here is the server's side

    number = quantities.value(text)
    if number is None:
        return text
    if isinstance(text, str) and text.endswith("i") and number == number.to_integral_value():
        for bits, suffix in _BINARY.items():
            if number >= 2**bits and number % (2**bits) == 0:
                return f"{int(number / 2**bits)}{suffix}"
        return str(int(number))
    for exponent in sorted(_DECIMAL, reverse=True):
        mantissa = number.scaleb(-exponent)
        if mantissa == mantissa.to_integral_value() and (mantissa != 0 or exponent == 0):
            return f"{int(mantissa)}{_DECIMAL[exponent]}"
    return str(text)


def _container(container: dict[str, Any]) -> None:
    resources = container.get("resources")
    if isinstance(resources, dict):  # serialised in canonical form (resource.Quantity.String)
        for section in ("requests", "limits"):
            if isinstance(resources.get(section), dict):
                resources[section] = {k: canonical_quantity(v) for k, v in resources[section].items()}
    # SetDefaults_Container
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if "imagePullPolicy" not in container:
        container["imagePullPolicy"] = (
            "Always" if _tag(str(container.get("image", ""))) == "latest" else ("IfNotPresent")
        )
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")  # SetDefaults_ContainerPort
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(name)
        if isinstance(probe, dict):  # SetDefaults_Probe, SetDefaults_HTTPGetAction
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                probe.setdefault(key, value)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")
    for variable in container.get("env") or []:
        field_ref = (variable.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")  # SetDefaults_ObjectFieldSelector


def _tag(image: str) -> str:
    """The image's tag as ``parsers.ParseImageName`` sees it: ``latest`` when it names neither a tag
    nor a digest."""
    last = image.rsplit("/", 1)[-1]
    name, _, digest = last.partition("@")
    if ":" in name:
        return name.rpartition(":")[2]
    return "" if digest else "latest"


def _crd_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Structural-schema defaulting: a missing property with a ``default`` gets it, recursively."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _crd_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in value:
                if name not in properties:
                    value[name] = _crd_defaults(value[name], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_crd_defaults(item, schema["items"]) for item in value]
    return value
