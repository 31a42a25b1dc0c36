#!/usr/bin/env python3
"""pgquartz benchmarks: each figure is printed with its baseline, measured in the same run.

    python3 dev.py bench            # all benchmarks, 5 runs each
    python3 dev.py bench --runs 3 --only commands,matrix

Benchmarks (targets from the issues; figures are min/median over the runs):

- commands: 1000 trivial shell commands in one step, against a bash script that runs
  ``bash -c '<line>'`` once per command (the physical floor: one bash per command). Printed
  twice: the total time (target ≤ 1.3×), and the marginal cost per command (the slope between
  250 and 1250 commands, which leaves out the interpreter's fixed start-up).
- matrix: 1000 instances at ``parallel: 8``, against ``xargs -P8`` running ``bash -c '<line>'``
  per instance. Target ≤ 1.6× in total time.
- memory: the runner's peak RSS while one command prints 200 MB, against the same runner running
  a command that prints nothing. Target < 150 MB.
- startup: ``pgquartz validate`` cold start, against ``python -c pass`` and ``pgquartz -v``
  (target ≤ 0.35 s).
- sql: 3000 and 10 000 one-row statements as separate commands in one job over one connection,
  against ``psql -X -q -f`` running the same statements over the same socket. Target ≤ 4× in
  total time, ≤ 2× per statement (marginal). Then a matrix
  of 1000 instances of one query at ``parallel: 8``, and the failover check: the same 10 000
  commands on a connection with ``role: primary`` (its server checked before each command) against
  ``role: all`` (checked only when a session opens). Target < 1.05×.
- lock: hand-off latency from the end of the holder's last command to the start of the next
  holder's first command (both written by ``date`` on the one clock of this machine: the lock keeps
  runs apart, so the gap is never negative), over 200 hand-offs (median, p99; target median < 50
  ms), the cost of the lock for an uncontended job, and the peak RSS of the 1000-command job
  with the lock, as PgQuartz always takes one (target ≤ 90 MB).
- operator: 1000 PgQuartzJobs (PGQ_BENCH_OPERATOR_COUNT) reconciled by the ``pgquartz-operator``
  process against the emulated API running in another process (bench/reconcile.py): time until every
  CronJob exists against a plain render-and-create loop (target ≤ 3×), the operator's CPU time
  (target ≤ 15 ms per resource) and peak RSS; then the same with 10 000 unrelated Jobs and
  CronJobs in the namespace (PGQ_BENCH_UNRELATED_COUNT), which must not change either.
- images: the runner and operator images' sizes, and ``podman run`` of the runner image to a finished
  trivial job against ``podman run`` of the base image running ``true`` (bench/images.py).
- ``--against REV`` (or ``PGQ_BENCH_AGAINST``): the runner of git revision REV as well, each of its
  samples taken right after ours, and printed with our ratio to it (commands, matrix, memory,
  startup, sql, lock): what a change did, beside the baselines.
- instructions: the instructions the runner's process executes for a few fixed jobs (valgrind),
  against the runner of ``PGQ_BENCH_AGAINST`` (default ``HEAD``): changes of a few per cent that
  the timings' noise hides (bench/instructions.py); only with ``--only instructions``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

PYTHON = sys.executable
COMMANDS = 1000
INSTANCES = 1000
SMALL = 250
STATEMENTS = 10_000
FEW_STATEMENTS = 3000  # the issue's own measurement
LINE = "echo x > /dev/null"

Figures = tuple[float, float]
"""min and median of the samples."""


class Runner:
    """A pgquartz to measure: this checkout's, or a revision's (from a copy, on PYTHONPATH)."""

    def __init__(self, label: str, pythonpath: str | None = None) -> None:
        self.label = label
        self.argv = [PYTHON, "-m", "pgquartz.runner"]
        self.env = None if pythonpath is None else {**os.environ, "PYTHONPATH": pythonpath}

    def timed(self, *args: str, cwd: pathlib.Path) -> float:
        return timed([*self.argv, *args], cwd, env=self.env)

    def peak_rss(self, *args: str, cwd: pathlib.Path) -> float:
        return peak_rss([*self.argv, *args], cwd, env=self.env)


OURS = Runner("pgquartz")
AGAINST: Runner | None = None
"""The runner of ``--against``, when asked for."""


def runners() -> list[Runner]:
    return [OURS] if AGAINST is None else [OURS, AGAINST]


def timed(argv: list[str], cwd: pathlib.Path, **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def figures(samples: list[float]) -> Figures:
    return min(samples), statistics.median(samples)


def measure(runs: int, action: Callable[[], float]) -> Figures:
    return figures([action() for _ in range(runs)])


def measure_pair(runs: int, ours: Callable[[], float], base: Callable[[], float]) -> tuple[Figures, Figures]:
    """Interleave the two, so a noisy neighbour slows both alike."""
    ours_samples, base_samples = [], []
    for _ in range(runs):
        ours_samples.append(ours())
        base_samples.append(base())
    return figures(ours_samples), figures(base_samples)


def measure_runners(
    runs: int, action: Callable[[Runner], float], base: Callable[[], float] | None = None
) -> tuple[dict[str, Figures], Figures | None]:
    """``action`` for each runner (ours, then --against's) and ``base``, interleaved sample by sample."""
    samples: dict[str, list[float]] = {runner.label: [] for runner in runners()}
    base_samples: list[float] = []
    for _ in range(runs):
        for runner in runners():
            samples[runner.label].append(action(runner))
        if base is not None:
            base_samples.append(base())
    return {label: figures(values) for label, values in samples.items()}, (
        figures(base_samples) if base is not None else None
    )


def report(
    name: str,
    *,
    ours: Figures,
    base: Figures,
    baseline: str,
    unit: str = "s",
    target: str = "",
) -> None:
    ratio_min, ratio_median = ours[0] / base[0], ours[1] / base[1]
    print(
        f"{name:<10} pgquartz min {ours[0]:.3f}{unit} median {ours[1]:.3f}{unit} | {baseline} min "
        f"{base[0]:.3f}{unit} median {base[1]:.3f}{unit} | ratio min {ratio_min:.2f}x median "
        f"{ratio_median:.2f}x {target}",
        flush=True,
    )


def report_against(measured: dict[str, Figures], *, unit: str = "s", scale: float = 1.0) -> None:
    """The --against runner's figures beside ours, and our ratio to them."""
    if AGAINST is None:
        return
    ours, theirs = measured[OURS.label], measured[AGAINST.label]
    print(
        f"{'':<10} at {AGAINST.label}: min {theirs[0] * scale:.3f}{unit} median {theirs[1] * scale:.3f}{unit}"
        f" | pgquartz against it: min {ours[0] / theirs[0]:.2f}x median {ours[1] / theirs[1]:.2f}x",
        flush=True,
    )


def report_runners(
    name: str,
    measured: dict[str, Figures],
    base: Figures,
    *,
    baseline: str,
    unit: str = "s",
    target: str = "",
) -> None:
    report(name, ours=measured[OURS.label], base=base, baseline=baseline, unit=unit, target=target)
    report_against(measured, unit=unit)


Timings = dict[int, tuple[dict[str, Figures], Figures]]


def report_marginal(unit: str, timings: Timings, extra: int, *, baseline: str, target: str) -> None:
    """The cost of one more command: the slope between SMALL and SMALL + extra, min and median."""

    def slope(of: Callable[[tuple[dict[str, Figures], Figures]], Figures]) -> Figures:
        large, small = of(timings[SMALL + extra]), of(timings[SMALL])
        return (large[0] - small[0]) / extra, (large[1] - small[1]) / extra

    ours = slope(lambda timing: timing[0][OURS.label])
    base = slope(lambda timing: timing[1])
    print(
        f"{'':<10} per {unit} (marginal): pgquartz min {ours[0] * 1000:.2f} ms median"
        f" {ours[1] * 1000:.2f} ms | {baseline} min {base[0] * 1000:.2f} ms median"
        f" {base[1] * 1000:.2f} ms | ratio min {ours[0] / base[0]:.2f}x median"
        f" {ours[1] / base[1]:.2f}x {target}"
    )
    if AGAINST is not None:
        label = AGAINST.label
        report_against(
            {OURS.label: ours, label: slope(lambda timing: timing[0][label])}, unit=" ms", scale=1000
        )


def commands_job(work: pathlib.Path, count: int) -> tuple[pathlib.Path, pathlib.Path]:
    job = work / f"commands-{count}.yml"
    commands = "\n".join(f"      - inline: '{LINE}'" for _ in range(count))
    job.write_text(f"git: {{disable: true}}\nsteps:\n  s:\n    commands:\n{commands}\n")
    script = work / f"commands-{count}.sh"
    script.write_text("".join(f"bash -c '{LINE}'\n" for _ in range(count)))
    return job, script


def bench_commands(work: pathlib.Path, runs: int) -> None:
    """Total time for 1000 commands, and the marginal cost of a command (the slope between
    SMALL and SMALL + 1000 commands), which leaves out both sides' fixed start-up."""
    timings: Timings = {}
    for count in (SMALL, SMALL + COMMANDS, COMMANDS):
        job, script = commands_job(work, count)
        measured, base = measure_runners(
            runs,
            lambda runner, job=job: runner.timed("-c", str(job), cwd=work),  # type: ignore[misc]
            lambda script=script: timed(["bash", str(script)], work),  # type: ignore[misc]
        )
        assert base is not None
        timings[count] = measured, base
    measured, base = timings[COMMANDS]
    report_runners(
        "commands", measured, base, baseline=f"bash -c x{COMMANDS}", target="(total, target <= 1.3x)"
    )
    report_marginal("command", timings, COMMANDS, baseline="bash", target="")


def matrix_job(work: pathlib.Path, count: int) -> pathlib.Path:
    job = work / f"matrix-{count}.yml"
    values = ", ".join(str(i) for i in range(count))
    job.write_text(
        f"git: {{disable: true}}\nparallel: 8\nsteps:\n  s:\n    matrix: {{n: [{values}]}}\n"
        f"    commands:\n      - inline: 'echo $PGQ_INSTANCE_N > /dev/null'\n"
    )
    return job


def bench_matrix(work: pathlib.Path, runs: int) -> None:
    def xargs(count: int) -> float:
        inputs = "".join(f"{i}\n" for i in range(count)).encode()
        started = time.perf_counter()
        subprocess.run(
            ["xargs", "-P8", "-I{}", "bash", "-c", "echo {} > /dev/null"],
            input=inputs,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    timings: Timings = {}
    for count in (SMALL, SMALL + INSTANCES, INSTANCES):
        job = matrix_job(work, count)
        measured, base = measure_runners(
            runs,
            lambda runner, job=job: runner.timed("-c", str(job), cwd=work),  # type: ignore[misc]
            lambda count=count: xargs(count),  # type: ignore[misc]
        )
        assert base is not None
        timings[count] = measured, base
    measured, base = timings[INSTANCES]
    report_runners("matrix", measured, base, baseline="xargs -P8", target="(total time, target <= 1.6x)")
    report_marginal("instance", timings, INSTANCES, baseline="xargs", target="")


def peak_rss(argv: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None) -> float:
    """The process's peak RSS (VmHWM) in MB, read until it exits."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    status = pathlib.Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return peak / 1024


def bench_memory(work: pathlib.Path, runs: int) -> None:
    loud = work / "loud.yml"
    loud.write_text(
        "git: {disable: true}\nsteps:\n  s:\n    commands:\n"
        "      - inline: 'head -c 200000000 /dev/zero | tr \"\\\\0\" x'\n"
    )
    quiet = work / "quiet.yml"
    quiet.write_text("git: {disable: true}\nsteps:\n  s:\n    commands:\n      - inline: 'true'\n")
    measured, base = measure_runners(
        runs,
        lambda runner: runner.peak_rss("-c", str(loud), cwd=work),
        lambda: OURS.peak_rss("-c", str(quiet), cwd=work),
    )
    assert base is not None
    report_runners(
        "memory",
        measured,
        base,
        baseline="silent job",
        unit="MB",
        target="(target: < 150 MB while printing 200 MB)",
    )


def bench_startup(work: pathlib.Path, runs: int) -> None:
    job = work / "startup.yml"
    job.write_text(
        "steps:\n  s:\n    commands: [{inline: 'true'}]\n    when: ['eq .Steps[\"t\"].Rc 0']\n"
        "  t: {commands: [{inline: 'true'}]}\n"
    )
    measured, base = measure_runners(
        runs,
        lambda runner: runner.timed("validate", str(job), cwd=work),
        lambda: timed([PYTHON, "-c", "pass"], work),
    )
    assert base is not None
    report_runners(
        "startup",
        measured,
        base,
        baseline="python -c pass",
        target="(pgquartz validate cold start; target <= 0.35 s)",
    )
    version, _ = measure_runners(runs, lambda runner: runner.timed("-v", cwd=work))
    print(f"{'':<10} pgquartz -v: min {version[OURS.label][0]:.3f}s median {version[OURS.label][1]:.3f}s")
    report_against(version)


def bench_sql(work: pathlib.Path, runs: int) -> None:
    """10 000 one-row statements as separate commands over one connection, against psql -f."""
    from tests.support.pgcluster import bin_dir, running_cluster

    with running_cluster() as cluster:
        params = cluster.primary.params
        connection = (
            f"connections:\n  pg: {{conn_params: {{host: '{params['host']}', port: {params['port']},"
            f" user: postgres, dbname: postgres}}}}\n"
        )
        timings: Timings = {}
        for count in (SMALL, SMALL + STATEMENTS, STATEMENTS, FEW_STATEMENTS):
            script = work / f"statements-{count}.sql"
            script.write_text("".join(f"select {i} as n;\n" for i in range(count)))
            job = work / f"statements-{count}.yml"
            commands = "\n".join(f"      - {{type: pg, inline: 'select {i} as n'}}" for i in range(count))
            job.write_text(f"git: {{disable: true}}\n{connection}steps:\n  s:\n    commands:\n{commands}\n")
            psql = [
                str(bin_dir() / "psql"),
                "-X",
                "-q",
                "-h",
                params["host"],
                "-p",
                params["port"],
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-f",
                str(script),
            ]
            measured, base = measure_runners(
                runs,
                lambda runner, job=job: runner.timed("-c", str(job), cwd=work),  # type: ignore[misc]
                lambda psql=psql: timed(psql, work),  # type: ignore[misc]
            )
            assert base is not None
            timings[count] = measured, base
        for count in (FEW_STATEMENTS, STATEMENTS):
            measured, base = timings[count]
            report_runners(
                "sql", measured, base, baseline=f"psql -f x{count}", target="(total, target <= 4x)"
            )
        report_marginal("statement", timings, STATEMENTS, baseline="psql", target="(target <= 2x)")

        checked = work / "statements-checked.yml"
        checked.write_text(
            (work / f"statements-{STATEMENTS}.yml")
            .read_text()
            .replace("  pg: {conn_params:", "  pg: {role: primary, conn_params:", 1)
        )
        unchecked = work / f"statements-{STATEMENTS}.yml"
        with_check, without = measure_pair(
            runs,
            lambda: OURS.timed("-c", str(checked), cwd=work),
            lambda: OURS.timed("-c", str(unchecked), cwd=work),
        )
        report(
            "failover",
            ours=with_check,
            base=without,
            baseline="role: all",
            target=f"(role: primary, server checked before each of {STATEMENTS} commands; target < 1.05x)",
        )

        values = ", ".join(str(i) for i in range(INSTANCES))
        job = work / "sql-matrix.yml"
        job.write_text(
            f"git: {{disable: true}}\nparallel: 8\n{connection}steps:\n  s:\n    matrix: {{n: [{values}]}}\n"
            "    commands:\n      - {type: pg, inline: 'select :n::int * 2 as doubled'}\n"
        )
        matrix, _ = measure_runners(runs, lambda runner: runner.timed("-c", str(job), cwd=work))
        ours = matrix[OURS.label]
        print(
            f"{'sql-matrix':<10} {INSTANCES} instances of one query at parallel 8: min {ours[0]:.3f}s"
            f" median {ours[1]:.3f}s ({ours[1] / INSTANCES * 1000:.2f} ms per instance)"
        )
        report_against(matrix)


def bench_lock(work: pathlib.Path, runs: int) -> None:
    """Lock hand-off latency over 200 hand-offs, and the cost of the lock for an uncontended job."""
    import asyncio
    import json

    from tests.support.etcdcluster import running_etcd

    with running_etcd(1) as etcd:
        endpoints = json.dumps(etcd.endpoints)
        starts, ends = work / "starts", work / "ends"

        work_line = f"date +%s.%N >> {starts}; sleep 0.02; date +%s.%N >> {ends}"

        def job_text(key: str) -> str:
            return (
                f"git: {{disable: true}}\n"
                f"etcdConfig: {{endpoints: {endpoints}, lockKey: {key}, lockTimeout: 10s}}\n"
                f"steps:\n  s:\n    commands:\n      - inline: '{work_line}'\n"
            )

        async def handoffs(runner: Runner, runners_at_once: int) -> list[float]:
            job = work / "handoff.yml"
            job.write_text(job_text("handoff"))
            processes = [
                await asyncio.create_subprocess_exec(
                    *runner.argv,
                    "-c",
                    str(job),
                    env=runner.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(runners_at_once)
            ]
            for process in processes:
                await process.wait()
            batch_starts = sorted(float(line) for line in starts.read_text().split())
            batch_ends = sorted(float(line) for line in ends.read_text().split())
            starts.unlink()
            ends.unlink()
            # The lock keeps the runs apart, so in time order run i ends before run i + 1 starts;
            # both ends are written by `date` on this machine's one clock.
            return [start - end for end, start in zip(batch_ends, batch_starts[1:], strict=False)]

        batches, at_once = 10, 21
        latencies: dict[str, list[float]] = {runner.label: [] for runner in runners()}
        for _ in range(batches):  # the runners' batches interleaved
            for runner in runners():
                latencies[runner.label] += asyncio.run(handoffs(runner, at_once))
        for runner in runners():
            seen = sorted(latencies[runner.label])
            p99 = seen[min(len(seen) - 1, int(len(seen) * 0.99))]
            name = "lock" if runner is OURS else ""
            who = "" if runner is OURS else f" at {runner.label}"
            print(
                f"{name:<10} hand-off{who} (holder's last command done → next holder's first command),"
                f" {len(seen)} hand-offs: median {statistics.median(seen) * 1000:.1f} ms,"
                f" p99 {p99 * 1000:.1f} ms, min {seen[0] * 1000:.1f} ms (target: median <= 50 ms)"
            )

        locked, plain = work / "locked.yml", work / "plain.yml"
        locked.write_text(job_text("alone"))
        plain.write_text("git: {disable: true}\nsteps:\n  s:\n    commands:\n      - inline: 'true'\n")
        locked.write_text(locked.read_text().replace(work_line, "true"))
        ours, base = measure_pair(
            runs,
            lambda: OURS.timed("-c", str(locked), cwd=work),
            lambda: OURS.timed("-c", str(plain), cwd=work),
        )
        print(
            f"{'':<10} uncontended job with the lock: median {ours[1]:.3f}s vs without {base[1]:.3f}s:"
            f" the lock costs {(ours[1] - base[1]) * 1000:.0f} ms (min {(ours[0] - base[0]) * 1000:.0f} ms)"
        )

        many, _ = commands_job(work, COMMANDS)
        many_locked = work / "commands-locked.yml"
        many_locked.write_text(
            many.read_text().replace(
                "git: {disable: true}\n",
                f"git: {{disable: true}}\netcdConfig: {{endpoints: {endpoints}, lockKey: rss}}\n",
            )
        )
        with_lock, without_lock = measure_runners(
            runs,
            lambda runner: runner.peak_rss("-c", str(many_locked), cwd=work),
            lambda: OURS.peak_rss("-c", str(many), cwd=work),
        )
        assert without_lock is not None
        print(
            f"{'':<10} peak RSS of {COMMANDS} shell commands with the lock: median"
            f" {with_lock[OURS.label][1]:.1f} MB, without {without_lock[1]:.1f} MB"
            " (target <= 90 MB with the lock)"
        )
        report_against(with_lock, unit=" MB")


def bench_operator(work: pathlib.Path, runs: int) -> None:
    """See bench/reconcile.py (imported here: it needs the operator's and the tests' packages)."""
    from bench import reconcile

    reconcile.bench(work, runs)


def bench_images(work: pathlib.Path, runs: int) -> None:
    """See bench/images.py (it builds the images with podman, as the tests do)."""
    from bench import images

    images.bench(work, runs)


def bench_instructions(work: pathlib.Path, runs: int) -> None:
    """See bench/instructions.py (valgrind's count of the runner's instructions, against a revision)."""
    from bench import instructions

    instructions.bench(work, runs)


def python_work_unit() -> float:
    """Seconds for a fixed pure-Python workload, best of five: how fast this machine runs the
    interpreter, to compare absolute figures (CPU per resource, ms per command) across machines."""

    def work() -> int:
        table = {i: str(i) for i in range(200_000)}
        return sum(len(text) for text in table.values())

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


BENCHMARKS = {
    "commands": bench_commands,
    "matrix": bench_matrix,
    "memory": bench_memory,
    "startup": bench_startup,
    "sql": bench_sql,
    "lock": bench_lock,
    "images": bench_images,
    "operator": bench_operator,
    "instructions": bench_instructions,
}
ASKED_FOR_ONLY = ("instructions",)
"""Run only when named in ``--only`` (valgrind makes it some minutes long)."""


@contextlib.contextmanager
def against(revision: str | None) -> Iterator[None]:
    """While it lasts, :data:`AGAINST` is the runner of ``revision`` (a bytecode copy), if one is asked."""
    global AGAINST
    if not revision:
        yield
        return
    from bench import instructions

    with instructions.runner_of(revision) as copy:
        AGAINST = Runner(revision, pythonpath=str(copy))
        try:
            yield
        finally:
            AGAINST = None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=",".join(name for name in BENCHMARKS if name not in ASKED_FOR_ONLY))
    parser.add_argument(
        "--against",
        default=os.environ.get("PGQ_BENCH_AGAINST", ""),
        help="a git revision whose runner is measured beside this one (default: none)",
    )
    args = parser.parse_args()
    if args.against:
        os.environ["PGQ_BENCH_AGAINST"] = args.against  # for bench/instructions.py too
    if shutil.which("bash") is None or shutil.which("xargs") is None:
        raise SystemExit("bash and xargs are needed")
    # An installed pgquartz has bytecode; an editable checkout under PYTHONDONTWRITEBYTECODE
    # would recompile every module on every start. Measure what users run.
    import compileall

    import pgquartz.runner

    for folder in pgquartz.runner.__path__:
        compileall.compile_dir(folder, quiet=1)
    print(
        f"pgquartz benchmarks: {args.runs} runs each, {os.cpu_count()} CPUs, {sys.version.split()[0]},"
        f" Python work unit {python_work_unit() * 1000:.0f} ms (absolute figures scale with it)"
        + (f"; against {args.against}" if args.against else "")
    )
    with tempfile.TemporaryDirectory(prefix="pgquartz-bench-") as scratch, against(args.against):
        for name in args.only.split(","):
            BENCHMARKS[name](pathlib.Path(scratch), args.runs)


if __name__ == "__main__":
    main()
