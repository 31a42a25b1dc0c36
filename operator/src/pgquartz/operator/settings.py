"""The operator's configuration, from its environment (the Helm chart sets it).

| variable | meaning | default |
|---|---|---|
| ``PGQUARTZ_NAMESPACES`` | comma-separated namespaces to watch; empty: the whole cluster | (cluster) |
| ``PGQUARTZ_RUNNER_IMAGE`` | job pods' image when a resource names none | ``pgquartz/runner:<version>`` |
| ``PGQUARTZ_ETCD_ENDPOINTS`` | comma-separated etcd endpoints for ``spec.lock`` without endpoints | (none) |
| ``PGQUARTZ_LOG_FORMAT`` | ``text`` or ``json`` | ``json`` |
| ``PGQUARTZ_LIVENESS_PORT`` | port of the liveness/readiness endpoint ``/healthz`` | ``8080`` |
| ``PGQUARTZ_METRICS_PORT`` | port of the Prometheus metrics | ``9090`` |
| ``PGQUARTZ_RECHECK_SECONDS`` | how often a resource missing a Secret or ConfigMap is checked | ``30`` |
| ``PGQUARTZ_MAX_INSTANCES`` | instances (matrix × steps) a job may have | ``10000`` |
| ``PGQUARTZ_VALIDATION_SECONDS`` | how long checking one resource's job may take | ``5`` |
| ``PGQUARTZ_ALLOWED_IMAGES`` | images a spec may name: repositories, ``prefix/``, ``*`` | the runner's |
| ``PGQUARTZ_ALLOW_SERVICE_ACCOUNTS`` | may a spec set ``podTemplate.serviceAccountName`` | ``false`` |
| ``PGQUARTZ_ALLOW_TOLERATIONS`` | may a spec set ``podTemplate.tolerations`` | ``false`` |
| ``PGQUARTZ_ALLOW_NODE_SELECTORS`` | may a spec set ``podTemplate.nodeSelector`` | ``false`` |
| ``PGQUARTZ_DENIED_ANNOTATIONS`` | pod annotations a spec may not set: keys, or ``prefix/`` | see policy |
| ``PGQUARTZ_ALLOW_LOCK_ENDPOINTS`` | may a spec name its own etcd endpoints | ``false`` |
| ``PGQUARTZ_ALLOW_CROSS_NAMESPACE_LOCKS`` | may a lock key or budget leave the namespace | ``false`` |
| ``PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS`` | may a spec name another namespace's cluster | ``false`` |

See pgquartz.operator.policy for why the defaults are what they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pgquartz.operator import manifests
from pgquartz.operator import policy as policies
from pgquartz.runner import __version__


class SettingsError(ValueError):
    """An environment variable has a value the operator cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...]
    defaults: manifests.Defaults
    log_format: str
    liveness_port: int
    metrics_port: int
    recheck_seconds: float = 30.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _items(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def from_environment(environ: Mapping[str, str]) -> Settings:
    log_format = environ.get("PGQUARTZ_LOG_FORMAT", "json")
    if log_format not in ("text", "json"):
        raise SettingsError(f"PGQUARTZ_LOG_FORMAT must be text or json, not {log_format!r}")
    liveness_port = _port(environ, "PGQUARTZ_LIVENESS_PORT", "8080")
    metrics_port = _port(environ, "PGQUARTZ_METRICS_PORT", "9090")
    recheck_seconds = _seconds(environ, "PGQUARTZ_RECHECK_SECONDS", "30", lower=1, upper=86400)
    image = environ.get("PGQUARTZ_RUNNER_IMAGE") or f"pgquartz/runner:{__version__}"
    denied = environ.get("PGQUARTZ_DENIED_ANNOTATIONS")
    rules = policies.Policy(
        allowed_images=_items(environ.get("PGQUARTZ_ALLOWED_IMAGES")) or (policies.repository(image),),
        allow_service_accounts=_flag(environ, "PGQUARTZ_ALLOW_SERVICE_ACCOUNTS"),
        allow_tolerations=_flag(environ, "PGQUARTZ_ALLOW_TOLERATIONS"),
        allow_node_selectors=_flag(environ, "PGQUARTZ_ALLOW_NODE_SELECTORS"),
        denied_annotations=policies.DENIED_ANNOTATIONS if denied is None else _items(denied),
        allow_lock_endpoints=_flag(environ, "PGQUARTZ_ALLOW_LOCK_ENDPOINTS"),
        allow_cross_namespace_locks=_flag(environ, "PGQUARTZ_ALLOW_CROSS_NAMESPACE_LOCKS"),
        allow_cross_namespace_clusters=_flag(environ, "PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS"),
    )
    max_instances = environ.get("PGQUARTZ_MAX_INSTANCES", "10000")
    if not max_instances.isdigit() or int(max_instances) < 1:
        raise SettingsError(f"PGQUARTZ_MAX_INSTANCES must be a positive number, not {max_instances!r}")
    budget = _seconds(environ, "PGQUARTZ_VALIDATION_SECONDS", "5", upper=600)
    return Settings(
        namespaces=_items(environ.get("PGQUARTZ_NAMESPACES")),
        defaults=manifests.Defaults(
            image=image,
            etcd_endpoints=_items(environ.get("PGQUARTZ_ETCD_ENDPOINTS")),
            policy=rules,
            max_instances=int(max_instances),
            validation_seconds=budget,
        ),
        log_format=log_format,
        liveness_port=liveness_port,
        metrics_port=metrics_port,
        recheck_seconds=recheck_seconds,
    )


def _seconds(
    environ: Mapping[str, str], name: str, default: str, *, lower: float = 0.1, upper: float
) -> float:
    text = environ.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not lower <= value <= upper:
        raise SettingsError(f"{name} must be a number of seconds ({lower:g}-{upper:g}), not {text!r}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    text = environ.get(name, "false").strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name} must be true or false, not {text!r}")
    return text in ("true", "1", "yes")


def _port(environ: Mapping[str, str], name: str, default: str) -> int:
    text = environ.get(name, default)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingsError(f"{name} must be a port number, not {text!r}")
    return int(text)
