"""Shared helpers: write job files, run the real ``pgquartz`` command, find leftover processes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator

import psutil
import pytest

from pgquartz.runner import loader
from tests.support.etcdcluster import EtcdCluster, running_etcd
from tests.support.pgcluster import PgCluster, running_cluster

PGQUARTZ = [sys.executable, "-m", "pgquartz.runner"]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def write_job(tmp_path: pathlib.Path) -> Callable[..., pathlib.Path]:
    """Write a job file (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "job.yml") -> pathlib.Path:
        path = tmp_path / name
        path.write_text(dedent(text))
        return path

    return write


@pytest.fixture
def load_job(write_job: Callable[..., pathlib.Path]) -> Callable[..., loader.LoadedJob]:
    def load(text: str, name: str = "job.yml") -> loader.LoadedJob:
        return loader.load(write_job(text, name))

    return load


def run_pgquartz(
    *args: str, cwd: pathlib.Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGQUARTZ, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        timeout=timeout,
        check=False,
    )


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``marker`` (zombies excluded)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A real PostgreSQL primary and streaming standby for the whole test session."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def database(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database on the primary (replicated to the standby), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_cluster.primary.query(f"create database {name}")
    # Wait for the standby to replay it: a job connecting there first would find no such database,
    # and an unreachable server is no role mismatch (a test of one ran its step on a loaded machine).
    deadline = time.monotonic() + 30
    while not pg_cluster.standby.query("select 1 from pg_database where datname = %s", (name,)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the standby did not replay the creation of database {name} in 30 s")
        time.sleep(0.02)
    yield name
    pg_cluster.primary.query(f"drop database if exists {name} with (force)")


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """A single-member etcd for the whole test session."""
    with running_etcd(1) as cluster:
        yield cluster
