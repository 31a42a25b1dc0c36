"""Every example runs as its README says, so the docs cannot drift from the code."""

from __future__ import annotations

import pathlib
import shutil

from tests.conftest import run_pgquartz

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_01_shell_matrix_runs_and_writes_what_its_readme_says(tmp_path: pathlib.Path) -> None:
    workdir = tmp_path / "example"
    shutil.copytree(EXAMPLES / "01-shell-matrix", workdir)
    result = run_pgquartz("-c", "nightly-archive.yml", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    csvs = sorted(path.name for path in (workdir / "out").glob("*.csv"))
    assert csvs == sorted(
        f"{db}.{table}.csv" for db in ("app", "billing") for table in ("orders", "customers", "invoices")
    )
    assert (workdir / "out" / "report.txt").read_text().startswith("archives: 6\n")
    assert "step 'alert' skipped" in result.stdout


def test_01_alerts_instead_of_reporting_when_an_archive_fails(tmp_path: pathlib.Path) -> None:
    workdir = tmp_path / "example"
    shutil.copytree(EXAMPLES / "01-shell-matrix", workdir)
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
