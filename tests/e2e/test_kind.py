"""The end-to-end tier: the scenarios of tests/pods on a real cluster (kind), where Docker and kind exist.

Thin on purpose: the scenarios are tests/pods/scenarios.py, run here against :class:`KindPlatform`
instead of the pod harness. The cluster gets the images built by images/build.py (with docker) and
loaded into kind, pgquartz from the plain bundle deploy/pgquartz.yaml (generated from the chart),
and a PostgreSQL and an etcd (services.yaml); a real Job controller and kubelet run the Jobs. Where
docker or kind are missing (as on the project's own machines) every test here is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgquartz.operator import names
from pgquartz.runner import __version__
from tests.pods import scenarios
from tests.support.kube import KUBECTL, secret_manifest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _missing() -> list[str]:
    missing = [tool for tool in ("kind",) if shutil.which(tool) is None]
    try:
        engine = (
            shutil.which("docker") is not None
            and subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        engine = False
    return missing if engine else [*missing, "Docker engine"]


MISSING = _missing()
WHY_NOT = (
    f"the e2e tier needs kind and a Docker engine, and this machine has no {' and no '.join(MISSING)}:"
    " tests/pods runs the same scenarios through real pods with podman"
)
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(MISSING), reason=WHY_NOT)]
CLUSTER = "pgquartz-e2e"


class KindPlatform:
    """A kind cluster with pgquartz installed; its own Job controller and kubelet run the Jobs."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def get(self, *what: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.kubectl("get", *what, "-o", "json").stdout)
        except RuntimeError:
            return None
        return data

    def eventually(self, check: Callable[[], Any], within: float = 20) -> Any:
        deadline = time.monotonic() + within * 3  # a real cluster schedules and pulls: be patient
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {within * 3} s")
            time.sleep(1)

    def run_jobs(self, owner: str) -> list[dict[str, Any]]:
        selector = f"pgquartz.io/job={names.label_value(owner)}"

        def finished() -> list[dict[str, Any]] | None:
            jobs = (self.get("jobs", "-n", scenarios.NAMESPACE, "-l", selector) or {}).get("items", [])
            done = [job for job in jobs if scenarios.condition(job, "Complete").get("status") == "True"
                    or scenarios.condition(job, "Failed").get("status") == "True"]  # fmt: skip
            return done if jobs and len(done) == len(jobs) else None

        found: list[dict[str, Any]] = self.eventually(finished, within=120)
        return found

    def params(self, database: str, *, target: int = 0) -> dict[str, str]:
        return {"host": "postgres.databases.svc", "port": "5432", "user": "postgres", "dbname": database}

    def sql(self, database: str, statement: str) -> list[tuple[str, ...]]:
        psql = ["psql", "-U", "postgres", "-d", database, "-At", "-F", "|", "-v", "ON_ERROR_STOP=1"]
        out = self.kubectl(
            "exec", "-n", scenarios.NAMESPACE, "deploy/postgres", "--", *psql, "-c", statement
        ).stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line and not line.startswith("CREATE")]

    def secret(self, name: str) -> None:
        self.kubectl(
            "apply", "-n", scenarios.NAMESPACE, "-f", "-", stdin=secret_manifest(name, {"password": "x"})
        )


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=1800)


@pytest.fixture(scope="module")
def platform() -> Iterator[KindPlatform]:
    with tempfile.TemporaryDirectory(prefix="pgq-e2e-") as scratch:
        kubeconfig = pathlib.Path(scratch) / "kubeconfig"
        _run(
            "kind", "create", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), "--wait", "180s"
        )
        try:
            _run(sys.executable, str(ROOT / "images" / "build.py"), "--engine", "docker")
            _run("kind", "load", "docker-image", "--name", CLUSTER,
                 f"pgquartz/runner:{__version__}", f"pgquartz/operator:{__version__}")  # fmt: skip
            kind = KindPlatform(kubeconfig)
            kind.kubectl("apply", "-f", str(pathlib.Path(__file__).with_name("services.yaml")))
            kind.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "pgquartz.yaml"))
            kind.kubectl(
                "set", "env", "-n", "pgquartz-system", "deployment/pgquartz",
                "PGQUARTZ_ETCD_ENDPOINTS=http://etcd.databases.svc:2379", "PGQUARTZ_RECHECK_SECONDS=2",
            )  # fmt: skip
            for namespace, deployment in (("databases", "postgres"), ("databases", "etcd"),
                                          ("pgquartz-system", "pgquartz")):  # fmt: skip
                kind.kubectl(
                    "rollout", "status", "-n", namespace, f"deployment/{deployment}", "--timeout=300s"
                )
            kind.secret("pg-maint")
            yield kind
        finally:
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], check=False, timeout=300)


@pytest.fixture
def database(platform: KindPlatform) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    platform.sql("postgres", f"create database {name}")
    yield name
    platform.sql("postgres", f"drop database if exists {name} with (force)")


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda scenario: scenario.__name__)
def test_on_a_kind_cluster(
    platform: KindPlatform, database: str, scenario: Callable[[scenarios.Platform, str], None]
) -> None:
    scenario(platform, database)
