#!/usr/bin/env python3
"""pgquartz benchmarks: each figure is printed with its baseline, measured in the same run.

    python3 dev.py bench            # all benchmarks, 5 runs each
    python3 dev.py bench --runs 3 --only commands,matrix

Benchmarks (targets from the issues; figures are min/median over the runs):

- commands: 1000 trivial shell commands in one step, against a bash script that runs
  ``bash -c '<line>'`` once per command (the physical floor: one bash per command). Printed
  twice: the total time (target ≤ 1.25×), and the marginal cost per command (the slope between
  250 and 1250 commands, which leaves out the interpreter's fixed start-up; target ≤ 1.15×).
- matrix: 1000 instances at ``parallel: 8``, against ``xargs -P8`` running ``bash -c '<line>'``
  per instance. Target ≤ 1.3× in total time.
- memory: the runner's peak RSS while one command prints 200 MB, against the same runner running
  a command that prints nothing. Target < 150 MB.
- startup: ``pgquartz validate`` cold start, against ``python -c pass`` and ``pgquartz -v``
  (target ≤ 0.12 s on the machine the issue measured 0.19 s on).
- sql: 3000 and 10 000 one-row statements as separate commands in one job over one connection,
  against ``psql -X -q -f`` running the same statements over the same socket. Target ≤ 5× in
  total time. Then a matrix
  of 1000 instances of one query at ``parallel: 8``, and the failover check: the same 10 000
  commands on a connection with ``role: primary`` (its server checked before each command) against
  ``role: all`` (checked only when a session opens). Target < 1.05×.
- lock: hand-off latency from the end of the holder's last command to the start of the next
  holder's first command (both written by ``date`` on the one clock of this machine: the lock keeps
  runs apart, so the gap is never negative), over 200 hand-offs (median, p99; target median < 50
  ms), the cost of the lock for an uncontended job, and the peak RSS of the 1000-command job
  with the lock, as PgQuartz always takes one (target ≤ 40 MB).
- operator: 1000 PgQuartzJobs (PGQ_BENCH_OPERATOR_COUNT) reconciled by the ``pgquartz-operator``
  process against the emulated API running in another process (bench/reconcile.py): time until every
  CronJob exists against a plain render-and-create loop (target ≤ 3×), the operator's CPU time
  (target ≤ 5 ms per resource) and peak RSS; then the same with 10 000 unrelated Jobs and
  CronJobs in the namespace (PGQ_BENCH_UNRELATED_COUNT), which must not change either.
- images: the runner and operator images' sizes, and ``podman run`` of the runner image to a finished
  trivial job against ``podman run`` of the base image running ``true`` (bench/images.py).
- instructions: the instructions the runner's process executes for a few fixed jobs (valgrind),
  against the runner of ``PGQ_BENCH_AGAINST`` (default ``HEAD``): changes of a few per cent that
  the timings' noise hides (bench/instructions.py); only with ``--only instructions``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

PYTHON = sys.executable
PGQUARTZ = [PYTHON, "-m", "pgquartz.runner"]
COMMANDS = 1000
INSTANCES = 1000
SMALL = 250
STATEMENTS = 10_000
FEW_STATEMENTS = 3000  # the issue's own measurement
LINE = "echo x > /dev/null"


def timed(argv: list[str], cwd: pathlib.Path, **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def measure(runs: int, action: Callable[[], float]) -> tuple[float, float]:
    samples = [action() for _ in range(runs)]
    return min(samples), statistics.median(samples)


def measure_pair(
    runs: int, ours: Callable[[], float], base: Callable[[], float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Interleave the two, so a noisy neighbour slows both alike."""
    ours_samples, base_samples = [], []
    for _ in range(runs):
        ours_samples.append(ours())
        base_samples.append(base())
    return (
        (min(ours_samples), statistics.median(ours_samples)),
        (min(base_samples), statistics.median(base_samples)),
    )


def report(
    name: str,
    *,
    ours: tuple[float, float],
    base: tuple[float, float],
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


Timings = dict[int, tuple[tuple[float, float], tuple[float, float]]]


def report_marginal(unit: str, timings: Timings, extra: int, *, baseline: str, target: str) -> None:
    """The cost of one more command: the slope between SMALL and SMALL + extra, min and median."""
    ours = [(timings[SMALL + extra][0][i] - timings[SMALL][0][i]) / extra for i in (0, 1)]
    base = [(timings[SMALL + extra][1][i] - timings[SMALL][1][i]) / extra for i in (0, 1)]
    print(
        f"{'':<10} per {unit} (marginal): pgquartz min {ours[0] * 1000:.2f} ms median"
        f" {ours[1] * 1000:.2f} ms | {baseline} min {base[0] * 1000:.2f} ms median"
        f" {base[1] * 1000:.2f} ms | ratio min {ours[0] / base[0]:.2f}x median"
        f" {ours[1] / base[1]:.2f}x {target}"
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
        timings[count] = measure_pair(
            runs,
            lambda job=job: timed([*PGQUARTZ, "-c", str(job)], work),  # type: ignore[misc]
            lambda script=script: timed(["bash", str(script)], work),  # type: ignore[misc]
        )
    ours, base = timings[COMMANDS]
    report(
        "commands", ours=ours, base=base, baseline=f"bash -c x{COMMANDS}", target="(total, target <= 1.25x)"
    )
    report_marginal("command", timings, COMMANDS, baseline="bash", target="(target <= 1.15x)")


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
        timings[count] = measure_pair(
            runs,
            lambda job=job: timed([*PGQUARTZ, "-c", str(job)], work),  # type: ignore[misc]
            lambda count=count: xargs(count),  # type: ignore[misc]
        )
    ours, base = timings[INSTANCES]
    report("matrix", ours=ours, base=base, baseline="xargs -P8", target="(total time, target <= 1.3x)")
    report_marginal("instance", timings, INSTANCES, baseline="xargs", target="")


def peak_rss(argv: list[str], cwd: pathlib.Path) -> float:
    """The process's peak RSS (VmHWM) in MB, read until it exits."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    ours_samples = [peak_rss([*PGQUARTZ, "-c", str(loud)], work) for _ in range(runs)]
    base_samples = [peak_rss([*PGQUARTZ, "-c", str(quiet)], work) for _ in range(runs)]
    ours = (min(ours_samples), statistics.median(ours_samples))
    base = (min(base_samples), statistics.median(base_samples))
    report(
        "memory",
        ours=ours,
        base=base,
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
    ours, base = measure_pair(
        runs,
        lambda: timed([*PGQUARTZ, "validate", str(job)], work),
        lambda: timed([PYTHON, "-c", "pass"], work),
    )
    version = measure(runs, lambda: timed([*PGQUARTZ, "-v"], work))
    report(
        "startup",
        ours=ours,
        base=base,
        baseline="python -c pass",
        target="(pgquartz validate cold start; target 0.12 s where it was 0.19 s)",
    )
    print(f"{'':<10} pgquartz -v: min {version[0]:.3f}s median {version[1]:.3f}s")


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
            timings[count] = measure_pair(
                runs,
                lambda job=job: timed([*PGQUARTZ, "-c", str(job)], work),  # type: ignore[misc]
                lambda psql=psql: timed(psql, work),  # type: ignore[misc]
            )
        for count in (FEW_STATEMENTS, STATEMENTS):
            ours, base = timings[count]
            report("sql", ours=ours, base=base, baseline=f"psql -f x{count}", target="(total, target <= 5x)")
        report_marginal("statement", timings, STATEMENTS, baseline="psql", target="")

        checked = work / "statements-checked.yml"
        checked.write_text(
            (work / f"statements-{STATEMENTS}.yml")
            .read_text()
            .replace("  pg: {conn_params:", "  pg: {role: primary, conn_params:", 1)
        )
        unchecked = work / f"statements-{STATEMENTS}.yml"
        with_check, without = measure_pair(
            runs,
            lambda: timed([*PGQUARTZ, "-c", str(checked)], work),
            lambda: timed([*PGQUARTZ, "-c", str(unchecked)], work),
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
        matrix = measure(runs, lambda: timed([*PGQUARTZ, "-c", str(job)], work))
        print(
            f"{'sql-matrix':<10} {INSTANCES} instances of one query at parallel 8: min {matrix[0]:.3f}s"
            f" median {matrix[1]:.3f}s ({matrix[1] / INSTANCES * 1000:.2f} ms per instance)"
        )


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

        batches_seen: list[tuple[list[float], list[float]]] = []

        async def handoffs(batches: int, runners: int) -> None:
            job = work / "handoff.yml"
            job.write_text(job_text("handoff"))
            for _ in range(batches):
                processes = [
                    await asyncio.create_subprocess_exec(
                        *PGQUARTZ, "-c", str(job), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                    for _ in range(runners)
                ]
                for process in processes:
                    await process.wait()
                batch_starts = sorted(float(line) for line in starts.read_text().split())
                batch_ends = sorted(float(line) for line in ends.read_text().split())
                batches_seen.append((batch_starts, batch_ends))
                starts.unlink()
                ends.unlink()

        batches, runners = 10, 21
        asyncio.run(handoffs(batches, runners))
        latencies = []
        for batch_starts, batch_ends in batches_seen:
            # The lock keeps the runs apart, so in time order run i ends before run i + 1 starts;
            # both ends are written by `date` on this machine's one clock.
            latencies += [start - end for end, start in zip(batch_ends, batch_starts[1:], strict=False)]
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"{'lock':<10} hand-off (holder's last command done → next holder's first command),"
            f" {len(latencies)} hand-offs: median {statistics.median(latencies) * 1000:.1f} ms,"
            f" p99 {p99 * 1000:.1f} ms, min {latencies[0] * 1000:.1f} ms (target: median < 50 ms)"
        )

        locked, plain = work / "locked.yml", work / "plain.yml"
        locked.write_text(job_text("alone"))
        plain.write_text("git: {disable: true}\nsteps:\n  s:\n    commands:\n      - inline: 'true'\n")
        locked.write_text(locked.read_text().replace(work_line, "true"))
        ours, base = measure_pair(
            runs,
            lambda: timed([*PGQUARTZ, "-c", str(locked)], work),
            lambda: timed([*PGQUARTZ, "-c", str(plain)], work),
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
        with_lock = [peak_rss([*PGQUARTZ, "-c", str(many_locked)], work) for _ in range(runs)]
        without_lock = [peak_rss([*PGQUARTZ, "-c", str(many)], work) for _ in range(runs)]
        print(
            f"{'':<10} peak RSS of {COMMANDS} shell commands with the lock: median"
            f" {statistics.median(with_lock):.1f} MB, without {statistics.median(without_lock):.1f} MB"
            " (target <= 40 MB with the lock)"
        )


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=",".join(name for name in BENCHMARKS if name not in ASKED_FOR_ONLY))
    args = parser.parse_args()
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
    )
    with tempfile.TemporaryDirectory(prefix="pgquartz-bench-") as scratch:
        for name in args.only.split(","):
            BENCHMARKS[name](pathlib.Path(scratch), args.runs)


if __name__ == "__main__":
    main()
