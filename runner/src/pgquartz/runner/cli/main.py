"""The ``pgquartz`` command: PgQuartz's flags, plus ``run``, ``validate``, ``plan`` and ``schema``.

``pgquartz -c job.yml`` (or ``PGQUARTZ_CONFIG=job.yml pgquartz``) runs a job
exactly as PgQuartz's command does; ``-d`` adds debug output, ``-v`` prints the
version. Heavy imports (the job model, jinja2, asyncio) wait until a command needs them, so
``pgquartz -v`` and ``--help`` answer at once.

Exit codes are a contract (see :class:`pgquartz.runner.model.exitcodes.ExitCode`).

The command (:func:`run`) leaves as soon as :func:`main` returns: by then a run
has stopped its commands, released its lock and closed its log and summary
files, and what is left is the interpreter taking its few hundred modules apart,
10–15 ms of a 0.1 s run. Output is flushed first; an exception still ends the
usual way, with its traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from pgquartz.runner import __version__

DEFAULT_CONFIG = "/etc/pgquartz/config.yaml"
SUBCOMMANDS = ("run", "validate", "plan", "schema", "lock")

EPILOG = """\
exit codes:
  0    success: steps ran (or were skipped by rules) and all checks passed
  1    the run failed: a check failed, or the job's timeout expired
  2    the job file (or command line) is invalid: nothing ran
  3    a connection's server has the wrong role: nothing ran
  4    the etcd lock was not acquired (etcd unusable, or the timeout expired): nothing ran
  5    the etcd lock was lost while steps ran: they were stopped
  6    a connection reached another server mid-run (failover, onFailover: abort): commands stopped
  7    the job's gates stayed closed and onTimeout is fail: nothing ran (a gated run exits 0)
  130  interrupted (SIGINT); 143 terminated (SIGTERM): commands stopped, lock released
"""


@functools.cache
def _columns() -> int:
    """The width argparse reads from ``shutil.get_terminal_size`` ($COLUMNS, else the terminal's,
    else 80), found without importing shutil: it imports the bz2, lzma and zlib modules (4-6 ms of
    every start), and argparse asks for it for every argument it adds, not only to print help."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, its width from :func:`_columns`."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        super().__init__(
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The same, descriptions and epilogs kept as written (the exit codes' table)."""


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--debug", action="store_true", help="show every command's output")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("PGQUARTZ_LOG_FORMAT", "text"),
        help="text for people (default), json for log collectors: one object per event",
    )
    parser.add_argument(
        "--summary-file",
        default=os.environ.get("PGQUARTZ_SUMMARY_FILE"),
        help="write a short JSON summary of the run here (e.g. /dev/termination-log)",
    )
    parser.add_argument(
        "--max-output",
        default=os.environ.get("PGQUARTZ_MAX_OUTPUT", "2MiB"),
        help="output kept per command and stream, head and tail halves (default 2MiB)",
    )
    parser.add_argument(
        "--no-git-pull", action="store_true", help="do not update the job's git repository first"
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=5.0,
        help="seconds between SIGTERM and SIGKILL when stopping a command (default 5)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgquartz",
        description="Run PgQuartz jobs: steps of shell and SQL commands, rules, matrices, checks.",
        epilog=EPILOG,
        formatter_class=_RawFormatter,
    )
    parser.add_argument("-v", "--version", action="version", version=f"pgquartz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a job (the default)",
        epilog=EPILOG,
        formatter_class=_RawFormatter,
    )
    run.add_argument("file", nargs="?", help="the job file (default: -c, $PGQUARTZ_CONFIG)")
    run.add_argument("-c", "--config", dest="config", help="the job file")
    _run_options(run)

    validate = sub.add_parser(
        "validate", help="check a job file; report every problem", formatter_class=_Formatter
    )
    validate.add_argument("file", nargs="?")
    validate.add_argument("-c", "--config", dest="config")

    plan = sub.add_parser(
        "plan", help="show what would run, in which order, gated by which rules", formatter_class=_Formatter
    )
    plan.add_argument("file", nargs="?")
    plan.add_argument("-c", "--config", dest="config")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    sub.add_parser("schema", help="print the job file's JSON Schema", formatter_class=_Formatter)

    lock = sub.add_parser("lock", help="inspect a job's etcd lock", formatter_class=_Formatter)
    lock_sub = lock.add_subparsers(dest="lock_command", metavar="ACTION", required=True)
    lock_status = lock_sub.add_parser(
        "status", help="who holds the lock, since when, and who waits", formatter_class=_Formatter
    )
    lock_status.add_argument("file", nargs="?")
    lock_status.add_argument("-c", "--config", dest="config")
    lock_status.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def _legacy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgquartz",
        usage="pgquartz [-c FILE] [-d] [-v] | pgquartz {run,validate,plan,schema} ...",
        description="Run PgQuartz jobs: steps of shell and SQL commands, rules, matrices, checks."
        " Subcommands: run, validate, plan, schema, lock status (pgquartz COMMAND --help).",
        epilog=EPILOG,
        formatter_class=_RawFormatter,
    )
    parser.add_argument("-c", "--config", dest="config", help="the job file (default: $PGQUARTZ_CONFIG)")
    parser.add_argument("-v", "--version", action="version", version=f"pgquartz {__version__}")
    _run_options(parser)
    parser.set_defaults(command="run", file=None)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    if argv and argv[0] in SUBCOMMANDS:
        return build_parser().parse_args(argv)
    return _legacy_parser().parse_args(argv)


def config_path(args: argparse.Namespace) -> str:
    return args.file or args.config or os.environ.get("PGQUARTZ_CONFIG") or DEFAULT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(arguments)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else 2
    if args.command == "schema":
        import json

        from pgquartz.runner.model import job

        print(json.dumps(job.json_schema(), indent=2))
        return 0
    if args.command in ("validate", "plan"):
        from pgquartz.runner.cli import inspect

        if args.command == "validate":
            return inspect.validate(config_path(args))
        return inspect.plan(config_path(args), as_json=args.json)
    if args.command == "lock":
        from pgquartz.runner.cli import lockcmd

        return lockcmd.status(config_path(args), as_json=args.json)
    from pgquartz.runner.cli import runjob

    return runjob.main(args, config_path(args))


def run() -> NoReturn:
    """The ``pgquartz`` command: :func:`main`, its output flushed, then exit with its code at once."""
    import contextlib

    from pgquartz.runner.cli import collector

    collector.pause()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, or a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
