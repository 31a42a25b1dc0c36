"""Small helpers for the servers the test support starts as child processes (etcd, the emulator,
the operator): a free loopback port, and stopping a process politely, then firmly."""

from __future__ import annotations

import socket
import subprocess
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[Any], *, grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns once the process is reaped."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
