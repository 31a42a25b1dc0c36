"""Every example runs as its README says, so the docs cannot drift from the code."""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import shutil
import subprocess
import time

from tests.conftest import PGQUARTZ, run_pgquartz
from tests.support.etcdcluster import EtcdCluster
from tests.support.pgcluster import PgCluster

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def copy_example(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    workdir = tmp_path / "example"
    shutil.copytree(EXAMPLES / name, workdir)
    return workdir


def test_01_shell_matrix_runs_and_writes_what_its_readme_says(tmp_path: pathlib.Path) -> None:
    workdir = copy_example("01-shell-matrix", tmp_path)
    result = run_pgquartz("-c", "nightly-archive.yml", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    csvs = sorted(path.name for path in (workdir / "out").glob("*.csv"))
    assert csvs == sorted(
        f"{db}.{table}.csv" for db in ("app", "billing") for table in ("orders", "customers", "invoices")
    )
    assert (workdir / "out" / "report.txt").read_text().startswith("archives: 6\n")
    assert "step 'alert' skipped" in result.stdout


def test_01_alerts_instead_of_reporting_when_an_archive_fails(tmp_path: pathlib.Path) -> None:
    workdir = copy_example("01-shell-matrix", tmp_path)
    script = workdir / "scripts" / "archive.sh"
    script.write_text(
        script.read_text().replace(
            "set -euo pipefail", 'set -euo pipefail\n[ "$PGQ_INSTANCE_TABLE" != invoices ] || exit 7'
        )
    )
    result = run_pgquartz("-c", "nightly-archive.yml", cwd=workdir)
    assert result.returncode == 1  # the report check fails
    assert "step 'report' skipped" in result.stdout
    assert "archiving failed, see the log" in result.stderr


def test_every_example_has_a_readme_and_valid_job_files() -> None:
    for example in sorted(path for path in EXAMPLES.iterdir() if path.is_dir()):
        assert (example / "README.md").exists(), example
        for job in example.glob("*.yml"):
            result = run_pgquartz("validate", str(job), cwd=example)
            assert result.returncode == 0, result.stderr


def test_02_primary_and_standby_runs_with_roles_and_parameters(
    tmp_path: pathlib.Path, pg_cluster: PgCluster
) -> None:
    workdir = copy_example("02-primary-and-standby", tmp_path)
    services = pg_cluster.write_service_file(tmp_path / "pg_service.conf")
    result = run_pgquartz("-c", "maintenance.yml", cwd=workdir, env={"PGSERVICEFILE": str(services)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "'only on a primary' skipped: expects a primary, 'node' reaches a standby" in result.stdout
    assert "step 'report' done" in result.stdout
    rows = pg_cluster.primary.query("select tbl from maintenance_audit order by tbl")
    assert [row[0] for row in rows] == ["customers'); DROP TABLE maintenance_audit; --", "invoices", "orders"]


def test_02_refuses_to_run_when_the_servers_are_swapped(
    tmp_path: pathlib.Path, pg_cluster: PgCluster
) -> None:
    workdir = tmp_path / "example"
    shutil.copytree(EXAMPLES / "02-primary-and-standby", workdir)
    services = pg_cluster.write_service_file(tmp_path / "pg_service.conf")
    text = services.read_text()
    swapped = text.replace("pgquartz-primary", "X").replace("pgquartz-standby", "pgquartz-primary")
    services.write_text(swapped.replace("X", "pgquartz-standby"))
    result = run_pgquartz("-c", "maintenance.yml", cwd=workdir, env={"PGSERVICEFILE": str(services)})
    assert result.returncode == 3
    assert "connection 'primary' expects a primary but reaches a standby" in result.stderr


def test_03_three_nodes_run_one_at_a_time_with_growing_fencing_tokens(
    tmp_path: pathlib.Path, pg_cluster: PgCluster, etcd: EtcdCluster
) -> None:
    services = pg_cluster.write_service_file(tmp_path / "pg_service.conf")
    processes = []
    for number in range(3):
        workdir = tmp_path / f"node{number}"
        shutil.copytree(EXAMPLES / "03-every-node-in-turn", workdir)
        job = workdir / "rolling-maintenance.yml"
        job.write_text(job.read_text().replace("localhost:2379", etcd.endpoints[0]))
        processes.append(
            subprocess.Popen(
                [*PGQUARTZ, "-c", str(job)],
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PGSERVICEFILE": str(services)},
            )
        )
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stdout + stderr
    runs = pg_cluster.primary.query("select fence, started, finished from rolling_runs order by fence")
    assert len(runs) == 3
    for (_, _, finished), (_, started, _) in itertools.pairwise(runs):
        assert finished <= started  # one at a time


def test_04_kubernetes_manifests_are_valid_and_render_runnable_objects(tmp_path: pathlib.Path) -> None:
    import jsonschema
    import kubernetes_validate
    import yaml

    from pgquartz.operator import crd, manifests
    from tests.operator.test_crd import _as_json_schema
    from tests.support.apiserver import schemas

    validator = jsonschema.Draft7Validator(_as_json_schema(crd.spec_schema()))
    defaults = manifests.Defaults(image="pgquartz/runner:test", etcd_endpoints=("etcd.pgquartz:2379",))
    files = sorted((EXAMPLES / "04-kubernetes").glob("*.yaml"))
    assert [f.name for f in files] == ["all-at-once.yaml", "every-node-in-turn.yaml", "one-node.yaml"]
    for path in files:
        obj = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(obj["spec"])) == [], path.name
        obj["metadata"]["uid"] = "uid-1"
        rendered = manifests.render(obj, defaults=defaults)
        for child in (rendered.config_map, rendered.cron_job):
            for minor in schemas.SUPPORTED_MINORS:
                kubernetes_validate.validate(child, minor, strict=True)
        data = rendered.config_map["data"]
        for key, text in data.items():
            (tmp_path / key).write_text(text)
        [job_file] = [key for key in data if key.endswith(".yml")]
        for target in [None, *sorted(key for key in data if key.endswith(".conn"))]:
            environment = {"PGQUARTZ_CONNECTION_PARAMS": target} if target else {}
            result = run_pgquartz("validate", job_file, cwd=tmp_path, env=environment)
            assert result.returncode == 0, f"{path.name} ({target}): {result.stderr}"
    turns = yaml.safe_load(
        next(
            iter(
                manifests.render(
                    yaml.safe_load(files[1].read_text())
                    | {"metadata": {"name": "rolling-checkpoint", "namespace": "databases", "uid": "u"}},
                    defaults=defaults,
                )
                .config_map["data"]
                .values()
            )
        )
    )
    assert turns["etcdConfig"]["lockKey"] == "databases/rolling-checkpoint"


def test_05_safe_maintenance_runs_when_the_cluster_is_caught_up(
    tmp_path: pathlib.Path, pg_cluster: PgCluster
) -> None:
    workdir = copy_example("05-safe-maintenance", tmp_path)
    services = pg_cluster.write_service_file(tmp_path / "pg_service.conf")
    pg_cluster.wait_replicated()
    result = run_pgquartz("-c", "safe-vacuum.yml", cwd=workdir, env={"PGSERVICEFILE": str(services)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check 'every table done' passed" in result.stdout
    plan = run_pgquartz("plan", "safe-vacuum.yml", cwd=workdir)
    assert "on failover: abort; retried on admin_shutdown, connection_failure" in plan.stdout
    assert "no backup running (on 'primary')" in plan.stdout


def test_05_is_gated_while_the_standby_is_behind(tmp_path: pathlib.Path, pg_cluster: PgCluster) -> None:
    workdir = copy_example("05-safe-maintenance", tmp_path)
    job = workdir / "safe-vacuum.yml"
    job.write_text(
        job.read_text()
        .replace("wait: 30m", "wait: 1s")
        .replace("maxReplicationLag: 5m", "maxReplicationLag: 1s")
    )
    services = pg_cluster.write_service_file(tmp_path / "pg_service.conf")
    pg_cluster.wait_replicated()
    pg_cluster.standby.query("select pg_wal_replay_pause()")
    try:
        pg_cluster.primary.query("create table if not exists lag_maker as select 1 as x")
        pg_cluster.primary.query("insert into lag_maker select 1")
        time.sleep(1.5)  # the last replayed transaction gets older than the gate's 1 s
        pg_cluster.primary.query("insert into lag_maker select 2")
        result = run_pgquartz(
            "-c",
            "safe-vacuum.yml",
            "--summary-file",
            "summary.json",
            cwd=workdir,
            env={"PGSERVICEFILE": str(services)},
        )
    finally:
        pg_cluster.standby.query("select pg_wal_replay_resume()")
        pg_cluster.wait_replicated()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SKIPPED (gated)" in result.stdout
    assert json.loads((workdir / "summary.json").read_text())["result"] == "gated"


def test_06_cloudnativepg_jobs_render_from_the_cluster_as_its_operator_made_it(
    tmp_path: pathlib.Path,
) -> None:
    """Both manifests applied with kubectl to the operator process, beside a CNPG Cluster, its
    Secrets and its three instance pods as CloudNativePG makes them."""
    import yaml

    from tests.support.kube import operator_cluster, secret_manifest

    environment = {
        "PGQUARTZ_RUNNER_IMAGE": "registry.example/pgquartz/runner:test",
        "PGQUARTZ_ETCD_ENDPOINTS": "etcd.pgquartz:2379",
        "PGQUARTZ_RECHECK_SECONDS": "1",
    }
    with operator_cluster(tmp_path, namespace="databases", environment=environment) as cluster:
        cnpg = {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "main"},
            "spec": {"instances": 3, "storage": {"size": "1Gi"}},
        }
        cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(cnpg))
        cluster.kubectl(
            "apply", "--validate=false", "-f", "-", stdin=secret_manifest("main-app", {"password": "s"})
        )
        cluster.kubectl(
            "apply", "--validate=false", "-f", "-", stdin=secret_manifest("main-ca", {"ca.crt": "PEM"})
        )
        for number, role in ((1, "primary"), (2, "replica"), (3, "replica")):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"main-{number}",
                    "labels": {"cnpg.io/cluster": "main", "cnpg.io/instanceRole": role},
                },
                "spec": {
                    "containers": [{"name": "postgres", "image": "ghcr.io/cloudnative-pg/postgresql:17"}]
                },
            }
            cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(pod))
            cluster.kubectl(
                "patch",
                "pod",
                f"main-{number}",
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"phase": "Running", "podIP": f"10.0.0.{number}"}}),
            )
        cluster.kubectl("apply", "--validate=false", "-f", str(EXAMPLES / "06-cloudnativepg"))

        def targets() -> list[str] | None:
            obj = cluster.get("pgqj", "rolling-checkpoint") or {}
            return (obj.get("status") or {}).get("targets")

        assert cluster.eventually(targets) == ["main-1", "main-2", "main-3"]
        files = (cluster.get("configmap", "pgqj-rolling-checkpoint") or {})["data"]
        hosts = [yaml.safe_load(files[key])["node"]["host"] for key in sorted(files) if key.endswith(".conn")]
        assert hosts == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        # kubectl's columns come from the API server's Table form, which the test API does not serve:
        # the CRD's column is checked instead
        from pgquartz.operator import crd

        [version] = crd.definition()["spec"]["versions"]
        assert {"name": "Cluster", "type": "string", "jsonPath": ".spec.targetsFrom.cluster.name"} in (
            version["additionalPrinterColumns"]
        )

        def vacuum_ready() -> bool:
            obj = cluster.get("pgqj", "nightly-vacuum") or {}
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        assert cluster.eventually(vacuum_ready)
        job = yaml.safe_load(
            (cluster.get("configmap", "pgqj-nightly-vacuum") or {})["data"]["nightly-vacuum.yml"]
        )
        params = job["connections"]["primary"]["conn_params"]
        assert (
            params["host"] == "main-rw.databases.svc"
            and params["sslrootcert"] == "/etc/pgquartz/ca/primary/ca.crt"
        )
        assert job["etcdConfig"]["budget"] == {"slots": 2, "scope": "databases"}
        cron_job = cluster.get("cronjob", "pgqj-nightly-vacuum") or {}
        volumes = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        assert {"key": "ca.crt", "path": "ca.crt"} in next(v for v in volumes if v["name"] == "ca-0")[
            "secret"
        ]["items"]
