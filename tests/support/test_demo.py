"""The demo the README promises (its SQL, lock and operator part) runs and shows what it says."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_demo_runs_examples_02_to_04_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.demo"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "(exit code 0: 0 means every check passed)" in out
    assert out.count("fence ") == 3  # three locked runs, one after another
    assert "Ready=True (ObjectsInPlace): ConfigMap and CronJob pgqj-nightly-vacuum are in place" in out
    assert "pgqj-nightly-vacuum-now-" in out  # the run-now Job
    assert 'pgquartzjob.pgquartz.io "nightly-vacuum" deleted' in out
