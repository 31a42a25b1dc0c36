"""Prometheus metrics of the operator: runs by result, last success per job, reconcile errors, the
time the last run waited for a budget slot.

A registry of its own (not the process-global default), so tests and several
operators in one process never collide; ``main`` serves it over HTTP.
"""

from __future__ import annotations

import dataclasses

import prometheus_client


@dataclasses.dataclass(frozen=True)
class Metrics:
    registry: prometheus_client.CollectorRegistry
    runs: prometheus_client.Counter
    last_success: prometheus_client.Gauge
    reconcile_errors: prometheus_client.Counter
    budget_wait: prometheus_client.Gauge

    def run_finished(
        self,
        *,
        namespace: str,
        name: str,
        result: str,
        completed_at: float | None,
        budget_waited: float | None = None,
    ) -> None:
        self.runs.labels(namespace=namespace, name=name, result=result).inc()
        if result == "Succeeded" and completed_at is not None:
            self.last_success.labels(namespace=namespace, name=name).set(completed_at)
        if budget_waited is not None:
            self.budget_wait.labels(namespace=namespace, name=name).set(budget_waited)


def create() -> Metrics:
    registry = prometheus_client.CollectorRegistry()
    return Metrics(
        registry=registry,
        runs=prometheus_client.Counter(
            "pgquartz_runs",
            "Finished runs of PgQuartzJobs, by result.",
            ["namespace", "name", "result"],
            registry=registry,
        ),
        last_success=prometheus_client.Gauge(
            "pgquartz_last_success_timestamp_seconds",
            "When a PgQuartzJob last succeeded (Unix time).",
            ["namespace", "name"],
            registry=registry,
        ),
        reconcile_errors=prometheus_client.Counter(
            "pgquartz_reconcile_errors",
            "Reconciliations that failed with an error.",
            ["namespace", "name"],
            registry=registry,
        ),
        budget_wait=prometheus_client.Gauge(
            "pgquartz_budget_wait_seconds",
            "How long a PgQuartzJob's last run waited for a slot of its budget.",
            ["namespace", "name"],
            registry=registry,
        ),
    )
