from pgquartz.operator import metrics, settings


def test_runs_are_counted_by_result_and_successes_timestamped() -> None:
    recorded = metrics.create()
    recorded.run_finished(namespace="db", name="nightly", result="Succeeded", completed_at=1_800_000_000.0)
    recorded.run_finished(namespace="db", name="nightly", result="Failed", completed_at=None)
    recorded.run_finished(namespace="db", name="nightly", result="Failed", completed_at=None)
    sample = recorded.registry.get_sample_value
    assert sample("pgquartz_runs_total", {"namespace": "db", "name": "nightly", "result": "Succeeded"}) == 1
    assert sample("pgquartz_runs_total", {"namespace": "db", "name": "nightly", "result": "Failed"}) == 2
    assert sample("pgquartz_last_success_timestamp_seconds", {"namespace": "db", "name": "nightly"}) == 1.8e9
    assert sample("pgquartz_budget_wait_seconds", {"namespace": "db", "name": "nightly"}) is None
    recorded.run_finished(
        namespace="db", name="nightly", result="Succeeded", completed_at=None, budget_waited=4.5
    )
    assert sample("pgquartz_budget_wait_seconds", {"namespace": "db", "name": "nightly"}) == 4.5


def test_registries_do_not_share_state() -> None:
    first, second = metrics.create(), metrics.create()
    first.reconcile_errors.labels(namespace="db", name="x").inc()
    assert (
        second.registry.get_sample_value("pgquartz_reconcile_errors_total", {"namespace": "db", "name": "x"})
        is None
    )


def test_the_metrics_port_is_configurable() -> None:
    assert settings.from_environment({}).metrics_port == 9090
    assert settings.from_environment({"PGQUARTZ_METRICS_PORT": "9100"}).metrics_port == 9100
