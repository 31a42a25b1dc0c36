"""``pgquartz-operator``: run the kopf operator with settings from the environment.

One replica at a time: the operator runs standalone (no kopf peering), so the
Helm chart deploys it with ``replicas: 1`` and the ``Recreate`` strategy; two
replicas would both write the same children and statuses. kopf keeps its
bookkeeping in ``pgquartz.io/…`` annotations (never in fields Argo CD
compares), serves ``/healthz`` for liveness and readiness probes and Prometheus
metrics on ``PGQUARTZ_METRICS_PORT``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import kopf
import kubernetes.client
import prometheus_client

from pgquartz.operator import bookkeeping, events, handlers, kubeapi, settings, watching
from pgquartz.operator import metrics as operator_metrics


def configure(operator_settings: kopf.OperatorSettings) -> None:
    """kopf's bookkeeping under pgquartz.io, and only our own Jobs and CronJobs streamed."""
    bookkeeping.configure(operator_settings)
    watching.configure(operator_settings)
    operator_settings.posting.level = 20  # INFO: created/updated objects and run outcomes
    operator_settings.posting.reporting_component = events.COMPONENT  # events kopf posts for the handlers


def build_registry(
    config: settings.Settings,
    *,
    store: Callable[[], handlers.ObjectStore] | None = None,
    metrics: operator_metrics.Metrics | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    if store is None:
        shared = kubeapi.KubernetesStore()

        def store() -> handlers.ObjectStore:
            return shared

        # A registry of our own gets none of kopf's implicit logins. kopf's login through the
        # official client loads the pod's service account, else the kubeconfig, into the client's
        # default configuration; the handlers use a copy of it (again after every new login).
        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            info = kopf.login_via_client(**kwargs)
            configuration = kubernetes.client.Configuration.get_default_copy()
            shared.log_in(configuration)
            return kubeapi.with_proxy(info, configuration)

    handlers.register(
        registry,
        store=store,
        defaults=config.defaults,
        metrics=metrics,
        recheck_interval=config.recheck_seconds,
    )

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: object) -> None:
        configure(settings)

    return registry


def main() -> int:
    try:
        config = settings.from_environment(os.environ)
    except settings.SettingsError as error:
        print(f"pgquartz-operator: {error}", file=sys.stderr)
        return 2
    kopf.configure(log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN)
    metrics = operator_metrics.create()
    prometheus_client.start_http_server(config.metrics_port, registry=metrics.registry)
    kopf.run(
        registry=build_registry(config, metrics=metrics),
        standalone=True,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
