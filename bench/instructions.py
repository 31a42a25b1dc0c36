"""The runner's instructions under valgrind, for changes smaller than the machine's timing noise.

Timings on a shared two-core machine move by a third from one run to the next,
so a change worth a few per cent cannot be seen in them. The number of
instructions the runner's process executes for the same job barely moves (the
PostgreSQL server and bash are other processes and are not
counted), so this benchmark counts them with callgrind for a few fixed jobs,
for the runner as checked out and for the runner of a git revision
(``PGQ_BENCH_AGAINST``, default ``HEAD``: what the uncommitted change does),
both compiled to bytecode first, one after the other in the same run.

    PGQ_BENCH_AGAINST=0cfdf12 python3 dev.py bench --only instructions

Each job runs once under callgrind (some 50 times slower than without it), so ``--runs`` does
not apply.
"""

from __future__ import annotations

import compileall
import contextlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def count(argv: list[str], *, cwd: pathlib.Path, pythonpath: str) -> int:
    """Instructions the process started by ``argv`` executed (its children not counted)."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    for line in result.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"callgrind printed no count for {argv}: {result.stderr[-500:]}")


RUNNER = "runner/src/pgquartz/runner"  # where the runner's package lies; before the two distributions: runner
EARLIER_RUNNER = "runner"


@contextlib.contextmanager
def runner_of(revision: str | None) -> Iterator[pathlib.Path]:
    """A directory whose ``pgquartz.runner`` is the runner of ``revision`` (None: as checked out), in
    bytecode. Both sides are imported from such a copy, so that they are found the same way."""
    with tempfile.TemporaryDirectory(prefix="pgquartz-revision-") as scratch:
        package = pathlib.Path(scratch) / "pgquartz"
        package.mkdir()
        (package / "__init__.py").write_text("")  # a regular package: nothing of the installed pgquartz
        if revision is None:
            shutil.copytree(ROOT / RUNNER, package / "runner", ignore=shutil.ignore_patterns("__pycache__"))
        else:
            extract_runner(revision, package / "runner")
        compileall.compile_dir(package, quiet=1)
        yield pathlib.Path(scratch)


def extract_runner(revision: str, target: pathlib.Path) -> None:
    """The runner's package folder at ``revision`` (of either layout) as ``target``."""
    for folder in (RUNNER, EARLIER_RUNNER):
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "--name-only", revision, f"{folder}/__init__.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if listed.strip():
            break
    else:
        raise RuntimeError(f"{revision} has no runner package in {RUNNER} or {EARLIER_RUNNER}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, folder],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory(prefix="pgquartz-archive-") as unpacked:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(unpacked, filter="data")
        shutil.move(pathlib.Path(unpacked, folder), target)


def jobs(work: pathlib.Path, connection: str | None) -> dict[str, list[str]]:
    """Name → the pgquartz arguments of each job counted."""
    shell = "\n".join("      - inline: 'echo x > /dev/null'" for _ in range(1000))
    (work / "shell-1.yml").write_text(
        "git: {disable: true}\nsteps:\n  s:\n    commands:\n      - inline: 'true'\n"
    )
    (work / "shell-1000.yml").write_text(f"git: {{disable: true}}\nsteps:\n  s:\n    commands:\n{shell}\n")
    values = ", ".join(str(i) for i in range(1000))
    (work / "matrix-1000.yml").write_text(
        f"git: {{disable: true}}\nparallel: 8\nsteps:\n  s:\n    matrix: {{n: [{values}]}}\n"
        "    commands:\n      - inline: 'echo $PGQ_INSTANCE_N > /dev/null'\n"
    )
    (work / "rule.yml").write_text(
        "steps:\n  s:\n    commands: [{inline: 'true'}]\n    when: ['eq .Steps[\"t\"].Rc 0']\n"
        "  t: {commands: [{inline: 'true'}]}\n"
    )
    found = {
        "validate, a job with a rule": ["validate", str(work / "rule.yml")],
        "1 shell command": ["-c", str(work / "shell-1.yml")],
        "1000 shell commands": ["-c", str(work / "shell-1000.yml")],
        "matrix, 1000 instances at parallel 8": ["-c", str(work / "matrix-1000.yml")],
    }
    if connection is not None:
        sql = "\n".join(f"      - {{type: pg, inline: 'select {i} as n'}}" for i in range(1000))
        for name, body in (("sql-1", "      - {type: pg, inline: 'select 0 as n'}"), ("sql-1000", sql)):
            (work / f"{name}.yml").write_text(
                f"git: {{disable: true}}\n{connection}steps:\n  s:\n    commands:\n{body}\n"
            )
        found["1 SQL command"] = ["-c", str(work / "sql-1.yml")]
        found["1000 SQL commands"] = ["-c", str(work / "sql-1000.yml")]
    return found


def bench(work: pathlib.Path, runs: int) -> None:
    if shutil.which("valgrind") is None:
        print("instructions: skipped, valgrind is not installed (apt-get install valgrind)")
        return
    revision = os.environ.get("PGQ_BENCH_AGAINST", "HEAD")
    from tests.support.pgcluster import running_cluster

    with running_cluster() as cluster, runner_of(None) as checked_out, runner_of(revision) as baseline:
        params = cluster.primary.params
        connection = (
            f"connections:\n  pg: {{conn_params: {{host: '{params['host']}', port: {params['port']},"
            f" user: postgres, dbname: postgres}}}}\n"
        )
        python = count([PYTHON, "-c", "pass"], cwd=work, pythonpath=str(checked_out))
        print(f"instructions (millions; the interpreter alone, python -c pass: {python / 1e6:.0f})")
        for name, arguments in jobs(work, connection).items():
            argv = [PYTHON, "-m", "pgquartz.runner", *arguments]
            ours = count(argv, cwd=work, pythonpath=str(checked_out))
            theirs = count(argv, cwd=work, pythonpath=str(baseline))
            print(
                f"{'':<10} {name}: {ours / 1e6:.0f} against {theirs / 1e6:.0f} at {revision}"
                f" ({(ours - theirs) / theirs * 100:+.1f} %)",
                flush=True,
            )
