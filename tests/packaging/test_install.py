"""Each half installs as a user installs it, into a new virtual environment, from a copy of its folder.

``pip install ./runner`` gives the runner alone: the ``pgquartz`` command works with neither kopf
nor the operator's code anywhere. ``pip install ./runner ./operator`` gives the operator and the
runner it pins. Each distribution is installed from a copy of its folder only, so a build that
reached outside its folder (for the version, a README, the other half's code) fails here. The
dependencies come from the package index (or pip's cache), as for a user.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from pgquartz.runner import __version__

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")

PROBE = """
import json
from importlib.metadata import distributions, version
from importlib.util import find_spec
print(json.dumps({
    "missing": [name for name in ("kopf", "kubernetes", "pgquartz.operator") if find_spec(name) is None],
    "installed": sorted(d.metadata["Name"] for d in distributions() if "pgquartz" in d.metadata["Name"]),
    "versions": {"pgquartz": version("pgquartz")},
}))
"""


def venv_with(tmp: pathlib.Path, *install: str | pathlib.Path) -> pathlib.Path:
    """A new virtual environment (no access to this one's packages) with ``pip install *install``."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *install],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def copy_of(folder: str, tmp: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(ROOT / folder, tmp / "checkout" / folder, ignore=IGNORED))


def outside_the_checkout(
    bin_dir: pathlib.Path, *argv: str | pathlib.Path, cwd: pathlib.Path
) -> subprocess.CompletedProcess[str]:
    # no PYTHONPATH: nothing of this checkout or of the test suite's environment is importable
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "NO_COLOR": "1"}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_the_runner_installs_alone_and_validates_a_job_without_kopf_or_the_operator(
    tmp_path: pathlib.Path,
) -> None:
    bin_dir = venv_with(tmp_path, copy_of("runner", tmp_path))
    job = tmp_path / "job.yml"
    job.write_text(
        "steps:\n  s:\n    commands: [{inline: 'true'}]\n    when: ['eq .Steps[\"t\"].Rc 0']\n"
        "  t: {commands: [{inline: 'true'}]}\n"
    )
    validated = outside_the_checkout(bin_dir, bin_dir / "pgquartz", "validate", job, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("steps:\n  s:\n    comands: []\n")
    refused = outside_the_checkout(bin_dir, bin_dir / "pgquartz", "validate", bad, cwd=tmp_path)
    assert refused.returncode == 2 and "bad.yml:3" in refused.stderr + refused.stdout
    probe = outside_the_checkout(bin_dir, bin_dir / "python", "-c", PROBE, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == (
        '{"missing": ["kopf", "kubernetes", "pgquartz.operator"], "installed": ["pgquartz"],'
        f' "versions": {{"pgquartz": "{__version__}"}}}}'
    )
    assert not (bin_dir / "pgquartz-operator").exists()


def test_the_operator_installs_with_the_runner_it_pins_and_starts_its_command(tmp_path: pathlib.Path) -> None:
    bin_dir = venv_with(tmp_path, copy_of("runner", tmp_path), copy_of("operator", tmp_path))
    for command in ([bin_dir / "pgquartz-operator"], [bin_dir / "python", "-m", "pgquartz.operator"]):
        env_argv = ["env", "PGQUARTZ_LOG_FORMAT=xml", *command]
        done = outside_the_checkout(bin_dir, *env_argv, cwd=tmp_path)
        assert done.returncode == 2 and "PGQUARTZ_LOG_FORMAT must be text or json" in done.stderr, done.stderr
    probe = outside_the_checkout(bin_dir, bin_dir / "python", "-c", PROBE, cwd=tmp_path)
    assert '"missing": [], "installed": ["pgquartz", "pgquartz-operator"]' in probe.stdout


def test_an_editable_install_is_a_plain_path_entry_to_each_src_folder(tmp_path: pathlib.Path) -> None:
    runner, operator = copy_of("runner", tmp_path), copy_of("operator", tmp_path)
    bin_dir = venv_with(tmp_path, "-e", runner, "-e", operator)
    script = (
        "import pathlib, sys, sysconfig, pgquartz.runner.model, pgquartz.operator.crd as crd;"
        " site = pathlib.Path(sysconfig.get_paths()['purelib']);"
        " print(sorted(p.read_text().strip() for p in site.glob('__editable__*.pth')));"
        " print(sorted(p.name for p in site.glob('__editable__*finder*')));"
        " print(pgquartz.runner.model.__file__); print(crd.__file__)"
    )
    done = outside_the_checkout(bin_dir, bin_dir / "python", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(sorted([str(operator / "src"), str(runner / "src")])),
        "[]",
        str(runner / "src" / "pgquartz" / "runner" / "model" / "__init__.py"),
        str(operator / "src" / "pgquartz" / "operator" / "crd.py"),
    ]
