"""The operator's settings come from its environment; bad values stop it with a clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pgquartz.operator import main, settings


def test_defaults() -> None:
    config = settings.from_environment({})
    assert config.clusterwide and config.log_format == "json" and config.liveness_port == 8080
    assert config.defaults.image.startswith("pgquartz/runner:") and config.defaults.etcd_endpoints == ()


def test_everything_from_the_environment() -> None:
    config = settings.from_environment(
        {
            "PGQUARTZ_NAMESPACES": "databases, maintenance",
            "PGQUARTZ_RUNNER_IMAGE": "registry.example/pgquartz/runner:1.2",
            "PGQUARTZ_ETCD_ENDPOINTS": "etcd-0:2379,etcd-1:2379",
            "PGQUARTZ_LOG_FORMAT": "text",
            "PGQUARTZ_LIVENESS_PORT": "9090",
            "PGQUARTZ_RECHECK_SECONDS": "120",
        }
    )
    assert config.recheck_seconds == 120
    assert config.namespaces == ("databases", "maintenance") and not config.clusterwide
    assert config.defaults.image == "registry.example/pgquartz/runner:1.2"
    assert config.defaults.etcd_endpoints == ("etcd-0:2379", "etcd-1:2379")
    assert config.log_format == "text" and config.liveness_port == 9090


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PGQUARTZ_LOG_FORMAT", "xml"),
        ("PGQUARTZ_LIVENESS_PORT", "http"),
        ("PGQUARTZ_RECHECK_SECONDS", "soon"),
        ("PGQUARTZ_RECHECK_SECONDS", "0"),
    ],
)
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(settings.SettingsError, match=name):
        settings.from_environment({name: value})


def test_the_command_exits_2_on_bad_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from pgquartz.operator import main; raise SystemExit(main.main())"],
        env={"PGQUARTZ_LOG_FORMAT": "xml", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "PGQUARTZ_LOG_FORMAT must be text or json" in result.stderr


def test_the_registry_serves_pgquartzjobs_jobs_and_startup() -> None:
    registry = main.build_registry(settings.from_environment({}), store=lambda: None)  # type: ignore[arg-type,return-value]
    selectors = [*registry._changing.get_all_selectors(), *registry._watching.get_all_selectors()]
    resources = {(selector.group, selector.plural or selector.any_name) for selector in selectors}
    assert {("pgquartz.io", "pgquartzjobs"), ("batch", "jobs"), ("batch", "cronjobs")} <= resources
    assert any("startup" in str(handler.id) for handler in registry._activities.get_all_handlers())
