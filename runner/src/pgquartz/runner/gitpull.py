"""Update the job's directory from git before running, as PgQuartz does.

If the job file lives in a git repository, PgQuartz pulls before running so a
fleet of nodes runs the job as committed. Here: ``git pull --ff-only <remote>``
(or, with ``revision``, fetch that revision and check it out detached), with
the git CLI. A failed pull is reported and the run goes on with what is on
disk, as in PgQuartz.

Credentials never reach a log or argv: ``rsaPath`` becomes ``GIT_SSH_COMMAND``,
``httpUser``/``httpPassword`` are answered by a private ``GIT_ASKPASS`` helper
reading them from its environment, and git's messages are scrubbed of any
``user:password@`` in URLs and of the password itself before they are shown.

Pulling is the default, and most job files live in no repository (a pod's
mounted file, a directory of the host's): there, no ``.git`` in the directory
or above it and no ``GIT_DIR`` mean git would find nothing, so the run neither
starts git nor imports what a pull needs (15 ms of a 0.15 s start here).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
from collections.abc import Mapping

from pgquartz.runner.model import records
from pgquartz.runner.model.job import GitConfig, pulls_from_git

TIMEOUT = 300.0
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$PGQUARTZ_GIT_USER" ;;
  *) printf '%s\\n' "$PGQUARTZ_GIT_PASSWORD" ;;
esac
"""


class PullResult(records.Record, kw_only=False):
    level: str  # "info", "warning"
    message: str
    updated: bool = False


def update(config: GitConfig | None, *, job_dir: pathlib.Path) -> PullResult | None:
    """Pull the repository holding the job; None when there is nothing to do (disabled, no repo, no git)."""
    if not pulls_from_git(config):
        return None
    config = config or GitConfig()
    directory = pathlib.Path(config.dir).expanduser() if config.dir else job_dir
    if not directory.is_absolute():
        directory = job_dir / directory
    if not may_be_in_repository(directory, os.environ):
        return None
    import shutil
    import tempfile

    git = shutil.which("git")
    if git is None:
        return None
    top = _git(git, directory, ["rev-parse", "--show-toplevel"], env=None)
    if top.returncode != 0:
        return None
    secrets = [config.http_password.get_secret_value()] if config.http_password else []
    with tempfile.TemporaryDirectory(prefix="pgquartz-git-") as scratch:
        env = _environment(config, pathlib.Path(scratch))
        before = _head(git, directory)
        if config.revision:
            steps = [
                ["fetch", "--quiet", config.remote, config.revision],
                ["checkout", "--quiet", "--detach", "FETCH_HEAD"],
            ]
        else:
            steps = [["pull", "--quiet", "--ff-only", config.remote]]
        for args in steps:
            completed = _git(git, directory, args, env=env)
            if completed.returncode != 0:
                detail = _scrub(completed.stderr.strip() or completed.stdout.strip(), secrets)
                return PullResult(
                    "warning",
                    f"git {args[0]} from {config.remote!r} failed, running with the files on disk: {detail}",
                )
    after = _head(git, directory)
    branch = _git(git, directory, ["rev-parse", "--abbrev-ref", "HEAD"], env=None).stdout.strip()
    where = f"{branch} at {after[:12]}" if branch and branch != "HEAD" else f"detached at {after[:12]}"
    if before != after:
        return PullResult("info", f"git: updated {directory} to {where}", updated=True)
    return PullResult("info", f"git: {directory} is up to date ({where})")


def may_be_in_repository(directory: pathlib.Path, environ: Mapping[str, str]) -> bool:
    """Whether git could find a repository for ``directory``: ``GIT_DIR`` is set, or the directory
    or one above it (as git looks, from its real path) holds a ``.git`` (a repository's directory,
    or a worktree's or submodule's file). False when none does; True also when one cannot tell."""
    if environ.get("GIT_DIR"):
        return True
    try:
        here = directory.resolve()
    except (OSError, RuntimeError):
        return True
    for candidate in (here, *here.parents):
        try:
            os.stat(candidate / ".git")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:  # unreadable: git may see what we cannot
            return True
        return True
    return False


def _environment(config: GitConfig, scratch: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    if config.rsa_path:
        import shlex

        key = str(pathlib.Path(config.rsa_path).expanduser())
        env["GIT_SSH_COMMAND"] = f"ssh -i {shlex.quote(key)} -o IdentitiesOnly=yes -o BatchMode=yes"
    if config.http_user or config.http_password:
        helper = scratch / "askpass.sh"
        helper.write_text(_ASKPASS)
        helper.chmod(0o700)
        env["GIT_ASKPASS"] = str(helper)
        env["PGQUARTZ_GIT_USER"] = config.http_user or ""
        env["PGQUARTZ_GIT_PASSWORD"] = config.http_password.get_secret_value() if config.http_password else ""
        # A credential helper configured on the machine must not answer instead of us.
        env["GIT_CONFIG_COUNT"] = "1"
        env["GIT_CONFIG_KEY_0"] = "credential.helper"
        env["GIT_CONFIG_VALUE_0"] = ""
    return env


def _git(
    git: str, directory: pathlib.Path, args: list[str], *, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [git, "-C", str(directory), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 1, "", f"timed out after {TIMEOUT:.0f}s")
    except OSError as error:
        return subprocess.CompletedProcess(args, 1, "", str(error))


def _head(git: str, directory: pathlib.Path) -> str:
    return _git(git, directory, ["rev-parse", "HEAD"], env=None).stdout.strip()


def _scrub(text: str, secrets: list[str]) -> str:
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
