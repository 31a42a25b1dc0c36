"""The runner and operator images, built with podman from images/ and run as a pod would run them."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from pgquartz.runner import __version__
from tests.support import images

pytestmark = pytest.mark.skipif(bool(images.MISSING), reason=images.WHY_NOT)

# As the operator's pod spec has it: non-root, read-only root filesystem, only /tmp writable.
POD = ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", "65532:65532"]


@pytest.fixture(scope="module")
def image() -> dict[str, str]:
    return images.built()


def test_the_runner_image_has_the_tools_jobs_call_and_tini_as_pid_1(image: dict[str, str]) -> None:
    script = (
        "psql --version && pg_dump --version && vacuumdb --version && reindexdb --version && git --version"
        " && ssh -V 2>&1 && id -u && tr '\\0' ' ' < /proc/1/cmdline"
    )
    done = images.podman(*POD, "--entrypoint", "/usr/bin/tini", image["runner"], "--", "bash", "-c", script)
    lines = done.stdout.splitlines()
    for tool in (
        "psql (PostgreSQL)",
        "pg_dump (PostgreSQL)",
        "vacuumdb (PostgreSQL)",
        "reindexdb (PostgreSQL)",
        "git version",
        "OpenSSH",
    ):
        assert any(line.startswith(tool) for line in lines), (tool, lines)
    assert "65532" in lines
    assert lines[-1].startswith("/usr/bin/tini")


def test_the_runner_image_runs_a_job_from_a_read_only_mount(
    image: dict[str, str], tmp_path: pathlib.Path
) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "nightly.yml").write_text(
        "steps:\n"
        "  write:\n    commands: [{inline: 'echo hello > $HOME/out && git config --global user.name x'}]\n"
        "  read:\n    depends: [write]\n    commands: [{inline: 'cat $HOME/out'}]\n"
        "checks:\n  - {inline: 'cat $HOME/out', expected: hello}\n"
    )
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    done = images.podman(
        *POD, "-v", f"{job}:/etc/pgquartz/job:ro", "-v", f"{out}:/out", image["runner"],
        "run", "/etc/pgquartz/job/nightly.yml", "--log-format", "json", "--summary-file", "/out/summary",
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary").read_text())
    assert summary["job"] == "nightly" and summary["exitCode"] == 0
    assert all(json.loads(line) for line in done.stdout.splitlines())  # JSON logs by default


def test_an_invalid_job_file_exits_2_in_the_image(image: dict[str, str], tmp_path: pathlib.Path) -> None:
    job = tmp_path / "job"  # pytest's own directories are private to root
    job.mkdir()
    (job / "bad.yml").write_text("steps: {a: {depends: [nothing], commands: [{inline: 'true'}]}}\n")
    done = images.podman(*POD, "-v", f"{job}:/job:ro", image["runner"], "run", "/job/bad.yml", check=False)
    assert done.returncode == 2 and "unknown step 'nothing'" in done.stderr


def test_the_images_hold_this_checkouts_pgquartz_and_the_operator_with_the_kubernetes_client(
    image: dict[str, str],
) -> None:
    """A rebuild after a code change installs the new code (the layer cache once kept the old); the
    operator's requests and login go through the official client, which its image carries."""
    script = (
        "import hashlib, importlib.metadata as m, pgquartz.operator.kubeapi as k;"
        " print(hashlib.sha256(open(k.__file__, 'rb').read()).hexdigest());"
        " print(int(m.version('kubernetes').split('.')[0]) >= 37)"
    )
    python = ["--entrypoint", "/opt/pgquartz/bin/python"]
    done = images.podman(*POD, *python, image["operator"], "-c", script)
    checkout = images.ROOT / "operator" / "src" / "pgquartz" / "operator" / "kubeapi.py"
    assert done.stdout.split() == [hashlib.sha256(checkout.read_bytes()).hexdigest(), "True"]


def test_the_runner_image_holds_only_the_runners_distribution(image: dict[str, str]) -> None:
    script = (
        "import importlib.metadata as m, importlib.util as u, shutil;"
        " print(*(u.find_spec(name) for name in ('kopf', 'kubernetes', 'pgquartz.operator')));"
        " print(shutil.which('pgquartz-operator'), m.version('pgquartz'));"
        " print(sorted(d.metadata['Name'] for d in m.distributions() if 'pgquartz' in d.metadata['Name']))"
    )
    python = ["--entrypoint", "/opt/pgquartz/bin/python"]
    done = images.podman(*POD, *python, image["runner"], "-c", script)
    assert done.stdout.splitlines() == ["None None None", f"None {__version__}", "['pgquartz']"]


def test_the_operator_image_starts_its_command_and_refuses_bad_settings(image: dict[str, str]) -> None:
    done = images.podman(*POD, "-e", "PGQUARTZ_LOG_FORMAT=xml", image["operator"], check=False)
    assert done.returncode == 2 and "PGQUARTZ_LOG_FORMAT must be text or json" in done.stderr


@pytest.mark.parametrize("name", ["runner", "operator"])
def test_images_carry_their_version_labels_and_a_non_root_user(image: dict[str, str], name: str) -> None:
    [inspected] = json.loads(images.podman("image", "inspect", image[name]).stdout)
    config = inspected["Config"]
    assert image[name].endswith(f"pgquartz/{name}:{__version__}")
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    assert config["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["User"] == "65532:65532"
    if name == "operator":
        assert {"8080/tcp", "9090/tcp"} <= set(config.get("ExposedPorts") or {})
