"""``git``: the job's repository is updated before running; failures are reported, secrets never."""

from __future__ import annotations

import base64
import http.server
import os
import pathlib
import subprocess
import threading
import typing
from collections.abc import Iterator

import pytest

from pgquartz.runner import gitpull
from pgquartz.runner.model import GitConfig
from tests.conftest import run_pgquartz

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(*args: str, cwd: pathlib.Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    ).stdout.strip()


JOB_V1 = "steps:\n  s: {commands: [{inline: 'echo version-one > ran.txt'}]}\n"
JOB_V2 = "steps:\n  s: {commands: [{inline: 'echo version-two > ran.txt'}]}\n"


@pytest.fixture
def repos(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """An upstream repository with a job file, and a clone of it (where the job runs)."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git("init", "-q", "-b", "main", cwd=upstream)
    (upstream / "job.yml").write_text(JOB_V1)
    git("add", "job.yml", cwd=upstream)
    git("commit", "-q", "-m", "v1", cwd=upstream)
    clone = tmp_path / "clone"
    git("clone", "-q", str(upstream), str(clone), cwd=tmp_path)
    return upstream, clone


def test_the_job_runs_as_committed_upstream(repos: tuple[pathlib.Path, pathlib.Path]) -> None:
    upstream, clone = repos
    (upstream / "job.yml").write_text(JOB_V2)
    git("commit", "-q", "-am", "v2", cwd=upstream)
    result = run_pgquartz("-c", "job.yml", cwd=clone)
    assert result.returncode == 0, result.stderr
    assert "git: updated" in result.stdout
    assert (clone / "ran.txt").read_text() == "version-two\n"  # the pulled job file was reloaded


def test_revision_checks_out_that_revision(repos: tuple[pathlib.Path, pathlib.Path]) -> None:
    upstream, clone = repos
    first = git("rev-parse", "HEAD", cwd=upstream)
    (upstream / "job.yml").write_text(JOB_V2)
    git("commit", "-q", "-am", "v2", cwd=upstream)
    git("tag", "release", cwd=upstream)
    result = gitpull.update(GitConfig(revision="release"), job_dir=clone)
    assert result is not None and result.updated and "detached" in result.message
    assert git("rev-parse", "HEAD", cwd=clone) != first
    assert (clone / "job.yml").read_text() == JOB_V2


def test_disable_and_no_repository_do_nothing(
    repos: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    _, clone = repos
    assert gitpull.update(GitConfig(disable=True), job_dir=clone) is None
    plain = tmp_path / "plain"
    plain.mkdir()
    assert gitpull.update(None, job_dir=plain) is None


def _recording_git(tmp_path: pathlib.Path) -> tuple[dict[str, str], pathlib.Path]:
    """A PATH whose ``git`` notes each call and then runs the real one."""
    real = subprocess.run(["which", "git"], check=True, capture_output=True, text=True).stdout.strip()
    bin_dir, calls = tmp_path / "bin", tmp_path / "git-calls"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def test_outside_any_repository_git_is_not_even_started(tmp_path: pathlib.Path) -> None:
    env, calls = _recording_git(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "job.yml").write_text(JOB_V1)
    result = run_pgquartz("-c", "job.yml", cwd=plain, env=env)
    assert result.returncode == 0, result.stderr
    assert (plain / "ran.txt").read_text() == "version-one\n"
    assert not calls.exists()  # no .git here or above, no GIT_DIR: git would have found nothing


def test_a_job_below_the_top_of_a_clone_is_still_pulled(
    repos: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    upstream, clone = repos
    (upstream / "jobs").mkdir()
    (upstream / "jobs" / "job.yml").write_text(JOB_V1)
    git("add", "jobs", cwd=upstream)
    git("commit", "-q", "-m", "jobs", cwd=upstream)
    git("pull", "-q", cwd=clone)
    (upstream / "jobs" / "job.yml").write_text(JOB_V2)
    git("commit", "-q", "-am", "v2", cwd=upstream)
    env, calls = _recording_git(tmp_path)
    result = run_pgquartz("-c", "job.yml", cwd=clone / "jobs", env=env)
    assert result.returncode == 0, result.stderr
    assert (clone / "jobs" / "ran.txt").read_text() == "version-two\n"
    assert "pull" in calls.read_text()


def test_what_may_hold_a_repository(tmp_path: pathlib.Path) -> None:
    plain = tmp_path / "plain" / "deeper"
    plain.mkdir(parents=True)
    assert not gitpull.may_be_in_repository(plain, {})
    assert gitpull.may_be_in_repository(plain, {"GIT_DIR": str(tmp_path / "elsewhere.git")})
    worktree = tmp_path / "worktree"
    (worktree / "sub").mkdir(parents=True)
    (worktree / ".git").write_text("gitdir: /somewhere/.git/worktrees/w\n")  # a worktree's file
    assert gitpull.may_be_in_repository(worktree / "sub", {})
    link = tmp_path / "link"
    link.symlink_to(worktree / "sub")  # git looks from the real path, as here
    assert gitpull.may_be_in_repository(link, {})


def test_a_failed_pull_is_reported_and_the_run_continues(repos: tuple[pathlib.Path, pathlib.Path]) -> None:
    upstream, clone = repos
    git("remote", "set-url", "origin", str(upstream.parent / "gone"), cwd=clone)
    result = run_pgquartz("-c", "job.yml", cwd=clone)
    assert result.returncode == 0
    assert "git pull from 'origin' failed, running with the files on disk" in result.stderr
    assert (clone / "ran.txt").read_text() == "version-one\n"


class _AuthRecorder(http.server.BaseHTTPRequestHandler):
    seen: typing.ClassVar[list[str]] = []

    def do_GET(self) -> None:
        header = self.headers.get("Authorization")
        if header is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        type(self).seen.append(header)
        self.send_response(403)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[str]:
    _AuthRecorder.seen = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _AuthRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/repo.git"
    server.shutdown()
    server.server_close()


def test_http_credentials_are_sent_but_never_printed(
    repos: tuple[pathlib.Path, pathlib.Path], auth_server: str
) -> None:
    _, clone = repos
    git("remote", "set-url", "origin", auth_server, cwd=clone)
    password = "s3cret-Passw0rd"
    (clone / "job.yml").write_text(f"git: {{httpUser: maint, httpPassword: {password}}}\n" + JOB_V1)
    result = run_pgquartz("-c", "job.yml", "-d", "--log-format", "json", cwd=clone)
    assert result.returncode == 0
    assert _AuthRecorder.seen, "git should have answered the server's challenge"
    assert base64.b64decode(_AuthRecorder.seen[0].split()[1]).decode() == f"maint:{password}"
    assert password not in result.stdout + result.stderr
    assert "git pull from 'origin' failed" in result.stdout


def test_credentials_in_urls_are_scrubbed_from_messages() -> None:
    text = "fatal: unable to access 'https://me:hunter2@git.example/x.git/': 403"
    assert (
        gitpull._scrub(text, ["hunter2"]) == "fatal: unable to access 'https://***@git.example/x.git/': 403"
    )


def test_rsa_path_is_the_key_ssh_is_given(
    repos: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, clone = repos
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    recorded = tmp_path / "ssh-args"
    ssh = fake_bin / "ssh"
    ssh.write_text(f'#!/bin/sh\necho "$@" > {recorded}\necho "fake ssh: no route" >&2\nexit 255\n')
    ssh.chmod(0o755)
    git("remote", "set-url", "origin", "ssh://git@git.example.invalid/repo.git", cwd=clone)
    key = tmp_path / "deploy key"
    key.write_text("not really a key\n")
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    result = gitpull.update(GitConfig.from_data({"rsaPath": str(key)}), job_dir=clone)
    assert result is not None and result.level == "warning" and "fake ssh: no route" in result.message
    args = recorded.read_text()
    assert f"-i {key}" in args and "IdentitiesOnly=yes" in args and "BatchMode=yes" in args
