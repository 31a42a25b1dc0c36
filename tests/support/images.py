"""The project's images, built with podman from images/ on a local Debian base, for the tests and benchmarks.

No registry is reachable here, so ``FROM python:…`` cannot be pulled: the base
is made once per machine from Debian's packages (``mmdebstrap``, then ``podman
import``) and reused. podman runs with the ``runc`` runtime and ``cgroupfs``
(crun fails on this host's cgroup layout) through a ``containers.conf`` of our
own. Where podman or mmdebstrap are missing, :data:`WHY_NOT` says so and the
tests that need them skip with that reason.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess

from images import build  # images/build.py: the repository's root is on sys.path in the tests

ROOT = pathlib.Path(__file__).resolve().parents[2]

CONF = ROOT / "build" / "containers.conf"
CONF_TEXT = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
"""
MISSING = [tool for tool in ("podman", "mmdebstrap", "runc") if shutil.which(tool) is None]
WHY_NOT = f"{', '.join(MISSING)} not installed (apt-get install podman runc mmdebstrap)" if MISSING else ""


def environment() -> dict[str, str]:
    CONF.parent.mkdir(parents=True, exist_ok=True)
    if not CONF.exists() or CONF.read_text() != CONF_TEXT:
        CONF.write_text(CONF_TEXT)
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], env=environment(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done


@functools.cache
def built() -> dict[str, str]:
    """Build (once per session) the base if missing, then both images; name → local image."""
    os.environ["CONTAINERS_CONF"] = environment()["CONTAINERS_CONF"]
    work = ROOT / "build" / "images"
    work.mkdir(parents=True, exist_ok=True)
    if podman("image", "exists", build.LOCAL_BASE, check=False).returncode != 0:
        build.make_base("podman", work)
    wheels = build.wheels(work / "wheels")
    return {
        name: "localhost/"
        + build.build("podman", name, base=build.LOCAL_BASE, wheel_dir=wheels, offline=True)
        for name in build.IMAGES
    }
