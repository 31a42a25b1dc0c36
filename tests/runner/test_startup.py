"""The runner loads what a job needs: never the operator, kopf or a Kubernetes client; psycopg
only for a job with connections, aetcd and grpc only for a job that locks."""

import pathlib
import subprocess
import sys

from tests.support.etcdcluster import EtcdCluster
from tests.support.pgcluster import PgCluster

PROBE = """
import sys
from pgquartz.runner.cli import main, runjob, inspect
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("kopf", "kubernetes", "aiohttp", "grpc", "aetcd",
               "psycopg")
               or m.startswith("pgquartz.operator"))
print(",".join(heavy))
"""


def test_running_a_job_loads_no_operator_code_and_no_client_it_does_not_need() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_version_and_help_need_no_heavy_imports() -> None:
    probe = (
        "import sys; from pgquartz.runner.cli import main; main.parse_args(['-c', 'x']);"
        "print('pgquartz.runner.model.job' in sys.modules, 'jinja2' in sys.modules, 'asyncio' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False False"


def test_only_a_job_that_locks_imports_aetcd_and_grpc(etcd: EtcdCluster, tmp_path: pathlib.Path) -> None:
    locked, plain = tmp_path / "locked.yml", tmp_path / "plain.yml"
    steps = "steps:\n  s:\n    commands: [{inline: 'true'}]\n"
    locked.write_text(
        f"git: {{disable: true}}\netcdConfig: {{endpoints: {etcd.endpoints}, lockKey: imports}}\n" + steps
    )
    plain.write_text("git: {disable: true}\n" + steps)
    probe = (
        "import sys; from pgquartz.runner.cli import main; code = main.main(['-c', sys.argv[1]]);"
        "print(code, sorted({'aetcd', 'grpc', 'kopf', 'kubernetes'} & set(sys.modules)))"
    )
    for job, imported in ((plain, "[]"), (locked, "['aetcd', 'grpc']")):
        result = subprocess.run(
            [sys.executable, "-c", probe, str(job)], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip().splitlines()[-1] == f"0 {imported}", result.stdout + result.stderr


def test_only_a_job_with_connections_imports_psycopg(pg_cluster: PgCluster, tmp_path: pathlib.Path) -> None:
    params = pg_cluster.primary.params
    sql, shell = tmp_path / "sql.yml", tmp_path / "shell.yml"
    sql.write_text(
        "git: {disable: true}\n"
        f"connections:\n  pg: {{conn_params: {{host: '{params['host']}', port: {params['port']},"
        " user: postgres, dbname: postgres}}\n"
        "steps:\n  s:\n    commands: [{type: pg, inline: 'select 1 as n'}]\n"
    )
    shell.write_text("git: {disable: true}\nsteps:\n  s:\n    commands: [{inline: 'true'}]\n")
    probe = (
        "import sys; from pgquartz.runner.cli import main; code = main.main(['-c', sys.argv[1]]);"
        "print(code, 'psycopg' in sys.modules)"
    )
    for job, imported in ((shell, "False"), (sql, "True")):
        result = subprocess.run(
            [sys.executable, "-c", probe, str(job)], capture_output=True, text=True, check=True
        )
        assert "SUCCEEDED" in result.stdout
        assert result.stdout.strip().splitlines()[-1] == f"0 {imported}"
