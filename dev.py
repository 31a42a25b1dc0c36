#!/usr/bin/env python3
"""Set up a development environment and run the demo or the whole test suite.

    python3 dev.py demo    # the runner on a demo job, with a readable report
    python3 dev.py test    # ruff, mypy --strict, import-linter, then pytest
    python3 dev.py bench   # the benchmarks under bench/, printing ratios to their baselines

Needs only Python 3.11+: everything else is installed into ./.venv (once; again
when a pyproject.toml changes): both distributions editable (``runner/`` is
``pgquartz``, ``operator/`` is ``pgquartz-operator``; each a plain path entry to its
``src/`` folder) and the workspace's ``test`` dependency group.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".pgquartz-installed"
DISTRIBUTIONS = ("runner", "operator")  # the workspace's members: [tool.uv.workspace] in pyproject.toml
PIP = "pip>=25.1"  # the first pip that installs a dependency group (--group)


def run(*argv: str | os.PathLike[str], cwd: pathlib.Path = ROOT, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in argv), flush=True)
    completed = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, check=False)
    if completed.returncode != 0:
        raise SystemExit(completed.returncode)


def setup() -> None:
    projects = [ROOT / "pyproject.toml", *(ROOT / name / "pyproject.toml" for name in DISTRIBUTIONS)]
    wanted = hashlib.sha256(b"".join(path.read_bytes() for path in projects)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "pgquartz-operator").exists():
        return
    if not (BIN / "python").exists():
        run(sys.executable, "-m", "venv", VENV)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", PIP)
    editable = [arg for name in DISTRIBUTIONS for arg in ("-e", ROOT / name)]
    run(BIN / "python", "-m", "pip", "install", "--quiet", *editable, "--group", "test", cwd=ROOT)
    STAMP.write_text(wanted)


HELM_VENV = ROOT / ".venv-helm"
HELM_SDKPY = "helm-sdkpy==0.1.32"


def newer_python() -> pathlib.Path | None:
    """A Python >= 3.12 for the Helm engine (helm-sdkpy needs it): on PATH, or one of pyenv's."""
    pyenv = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv")) / "versions"
    candidates = [str(path) for path in sorted(pyenv.glob("3.1[2-9]*/bin/python3"), reverse=True)]
    candidates += [shutil.which(name) for name in ("python3.13", "python3.12", "python3")]
    check = "import sys; sys.exit(sys.version_info < (3, 12))"
    for candidate in candidates:
        if not candidate:
            continue
        if subprocess.run([candidate, "-c", check], capture_output=True, check=False).returncode == 0:
            return pathlib.Path(candidate)
    return None


def setup_helm() -> None:
    """``.venv-helm`` with the real Helm engine, for the chart's tests (skipped, saying why, without)."""
    stamp = HELM_VENV / ".helm-sdkpy-installed"
    if stamp.exists() and stamp.read_text() == HELM_SDKPY:
        return
    python = newer_python()
    if python is None:
        print("no Python >= 3.12 found: the chart's tests will be skipped", flush=True)
        return
    run(python, "-m", "venv", "--clear", HELM_VENV)
    run(HELM_VENV / "bin" / "python", "-m", "pip", "install", "--quiet", HELM_SDKPY)
    stamp.write_text(HELM_SDKPY)


IMAGE_TOOLS = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}


def setup_images() -> None:
    """podman, runc and mmdebstrap from Debian's packages, for the image tests (skipped, saying why,
    where they cannot be installed)."""
    missing = [package for tool, package in IMAGE_TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(f"cannot install {', '.join(missing)}: the image tests will be skipped", flush=True)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL}
    print(f"+ apt-get install {' '.join(missing)}", flush=True)
    if subprocess.run(["apt-get", "update", "-q"], env=env, check=False, **quiet).returncode == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, check=False, **quiet)


def lint() -> None:
    """ruff, mypy --strict, import-linter and basedpyright on the folders as they lie (the settings are
    the workspace's pyproject.toml): no tree is built, no path renamed."""
    sources = ("runner", "operator", "tests", "bench", "images", "docs", "dev.py")
    run(BIN / "ruff", "check", *sources)
    run(BIN / "ruff", "format", "--check", *sources)
    run(BIN / "mypy")
    run(BIN / "lint-imports")
    unresolved_imports()


UNRESOLVED = ("is unknown import symbol", "is not a known attribute of module")


def unresolved_imports() -> None:
    """basedpyright (its settings: [tool.pyright] in pyproject.toml) must resolve every import: a
    module it cannot find is an error there, a name a module does not have a warning, which this
    counts too. Its other warnings are type inference, mypy's to judge."""
    argv = [BIN / "basedpyright", "--outputjson"]
    print("+", " ".join(map(str, argv)), flush=True)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
        raise SystemExit(done.returncode or 1) from None
    found = [
        diagnostic
        for diagnostic in report["generalDiagnostics"]
        if diagnostic["severity"] == "error" or any(text in diagnostic["message"] for text in UNRESOLVED)
    ]
    for diagnostic in found:
        line = diagnostic.get("range", {}).get("start", {}).get("line", -1) + 1
        print(f"{diagnostic['file']}:{line}: {diagnostic['message']}", file=sys.stderr)
    summary = report["summary"]
    print(f"basedpyright: {summary['filesAnalyzed']} files, {len(found)} unresolved imports", flush=True)
    if found:
        raise SystemExit(1)


def test(extra: list[str]) -> None:
    lint()
    run(BIN / "python", "-m", "pytest", "-q", "-ra", *extra)


def demo() -> None:
    """Example 01 (shell only), then examples 02–04 (SQL, the lock, the operator): tests/support/demo.py."""
    example = ROOT / "examples" / "01-shell-matrix"
    with tempfile.TemporaryDirectory(prefix="pgquartz-demo-") as scratch:
        workdir = pathlib.Path(scratch) / example.name
        shutil.copytree(example, workdir)
        print(f"\n== pgquartz plan {example.name}/nightly-archive.yml\n", flush=True)
        run(BIN / "pgquartz", "plan", "nightly-archive.yml", cwd=workdir)
        print(f"\n== pgquartz -c {example.name}/nightly-archive.yml\n", flush=True)
        first = subprocess.run([str(BIN / "pgquartz"), "-c", "nightly-archive.yml"], cwd=workdir, check=False)
        print(f"\n(exit code {first.returncode}: 0 means every check passed)")
    # The repository's root on sys.path, for tests.support: it holds no module of ours.
    second = subprocess.run(
        [str(BIN / "python"), "-m", "tests.support.demo"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    raise SystemExit(first.returncode or second.returncode)


def bench(extra: list[str]) -> None:
    # a module of the repository's root, so that bench, tests.support and images import as they lie
    run(BIN / "python", "-m", "bench.run", *extra)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command not in ("demo", "test", "bench", "lint", "setup"):
        print(__doc__)
        raise SystemExit(0 if command in ("help", "-h", "--help") else 2)
    setup()
    if command in ("test", "setup"):
        setup_helm()
        setup_images()
    if command == "demo":
        demo()
    elif command == "test":
        test(sys.argv[2:])
    elif command == "lint":
        lint()
    elif command == "bench":
        bench(sys.argv[2:])


if __name__ == "__main__":
    main()
