#!/usr/bin/env python3
"""Build the runner and operator images with podman or docker.

    python3 images/build.py                          # both, FROM python:3.11-slim-bookworm
    python3 images/build.py --base localhost/pgquartz-base:bookworm --offline
    python3 images/build.py --make-base              # that base, made with mmdebstrap (no registry)

The wheels of both distributions (``runner/`` is ``pgquartz``, ``operator/`` is
``pgquartz-operator``) and of every dependency are built or downloaded first
(``pip wheel``, with this Python: use a 3.11 like the base image's); each image
then installs only its own distribution from them with ``--no-index`` (the
runner image neither kopf nor the operator's code), so the build itself needs
no network when the base already has the client tools. Images are tagged with the
package version (``pgquartz/runner:<version>``, ``pgquartz/operator:<version>``),
the tag the operator's default runner image and the Helm chart name.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGES = ("runner", "operator")  # each image is named after the folder of the distribution it installs
DEFAULT_BASE = "docker.io/library/python:3.11-slim-bookworm"
LOCAL_BASE = "localhost/pgquartz-base:bookworm"
BASE_PACKAGES = (
    "python3,python3-venv,bash,coreutils,postgresql-client,git,openssh-client,ca-certificates,tini"
)


def version() -> str:
    """Both distributions' version, from the one place it is written (the runner's ``__version__``)."""
    module = ast.parse((ROOT / "runner" / "src" / "pgquartz" / "runner" / "__init__.py").read_text())
    for statement in module.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in statement.targets
        ):
            return str(ast.literal_eval(statement.value))
    raise RuntimeError("runner/src/pgquartz/runner/__init__.py sets no __version__")


def tag(name: str) -> str:
    return f"pgquartz/{name}:{version()}"


def run(*argv: str | os.PathLike[str], **kwargs: object) -> None:
    print("+", " ".join(map(str, argv)), flush=True)
    subprocess.run([str(a) for a in argv], check=True, **kwargs)  # type: ignore[call-overload]


def wheels(target: pathlib.Path) -> pathlib.Path:
    """Both distributions' wheels and their dependencies' in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    distributions = [ROOT / name for name in IMAGES]
    for distribution in distributions:
        # setuptools builds in the folder's build/ and packs all it finds there: a module deleted
        # since an earlier build would still be in the wheel
        shutil.rmtree(distribution / "build", ignore_errors=True)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", target, *distributions)
    return target


def make_base(engine: str, work: pathlib.Path) -> str:
    """A Debian bookworm base with Python and the tools, from Debian's packages (mmdebstrap)."""
    rootfs = work / "rootfs.tar"
    run("mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", rootfs)
    run(engine, "import", rootfs, LOCAL_BASE)
    rootfs.unlink()
    return LOCAL_BASE


def digest(wheel_dir: pathlib.Path) -> str:
    """The wheels' names and contents in one hash: a new build of pgquartz is a new digest."""
    hashed = hashlib.sha256()
    for wheel in sorted(wheel_dir.glob("*.whl")):
        hashed.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    return hashed.hexdigest()


def build(engine: str, name: str, *, base: str, wheel_dir: pathlib.Path, offline: bool) -> str:
    context = ROOT / "build" / "images" / name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy(ROOT / "images" / name / "Containerfile", context / "Containerfile")
    shutil.copytree(wheel_dir, context / "wheels")
    network = ["--network", "none"] if offline else []
    run(
        engine, "build", *network,
        "--build-arg", f"BASE={base}", "--build-arg", f"VERSION={version()}",
        "--build-arg", f"WHEELS={digest(wheel_dir)}",
        "--tag", tag(name), "--file", context / "Containerfile", context,
    )  # fmt: skip
    return tag(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    engine = os.environ.get("CONTAINER_ENGINE") or ("podman" if shutil.which("podman") else "docker")
    parser.add_argument("--engine", default=engine, help="podman (default when installed) or docker")
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"the base image (default {DEFAULT_BASE})")
    parser.add_argument(
        "--make-base", action="store_true", help=f"make {LOCAL_BASE} with mmdebstrap and use it"
    )
    parser.add_argument(
        "--offline", action="store_true", help="build without network (the base has the tools)"
    )
    parser.add_argument("--only", default=",".join(IMAGES), help="runner, operator or both (default)")
    args = parser.parse_args(argv)
    work = ROOT / "build" / "images"
    work.mkdir(parents=True, exist_ok=True)
    base = make_base(args.engine, work) if args.make_base else args.base
    wheel_dir = wheels(work / "wheels")
    for name in args.only.split(","):
        if name not in IMAGES:
            parser.error(f"unknown image {name!r}")
        print(
            build(args.engine, name, base=base, wheel_dir=wheel_dir, offline=args.offline or args.make_base)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
