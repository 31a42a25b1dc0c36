"""Prometheus metrics of the operator: runs by result, last success per job, reconcile errors.

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

    def run_finished(self, *, namespace: str, name: str, result: str, completed_at: float | None) -> None:
        self.runs.labels(namespace=namespace, name=name, result=result).inc()
        if result == "Succeeded" and completed_at is not None:
            self.last_success.labels(namespace=namespace, name=name).set(completed_at)


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
    )
