"""The runner's exit codes: a documented contract.

Schedulers act on them: Kubernetes' ``podFailurePolicy`` (rendered by the
operator, which is why they live in the model, the one runner module the
operator imports) never retries an invalid job file or a role mismatch at start
but does retry a run a failover stopped, and a cron wrapper can tell "the checks
failed" from "another node held the lock". A run its gates skipped exits 0.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """How a ``pgquartz`` run ended. Values never change once released."""

    SUCCESS = 0
    """Every step ran (or was skipped by its rules) and every check passed."""

    RUN_FAILED = 1
    """A check failed, or the job's ``timeout`` expired."""

    INVALID_JOB = 2
    """The job file (or the command line) is invalid; nothing ran."""

    ROLE_MISMATCH = 3
    """A connection's server has another role than configured; nothing ran."""

    LOCK_NOT_ACQUIRED = 4
    """The etcd lock was not acquired before the timeout; nothing ran."""

    LOCK_LOST = 5
    """The etcd lock was lost while steps ran; running commands were cancelled."""

    FAILOVER = 6
    """A connection reached another server mid-run (a failover) and its ``onFailover`` is abort;
    running commands were stopped. Worth running again: the cluster has settled on a new primary."""

    GATE_FAILED = 7
    """The job's gates did not open within their ``wait`` and ``onTimeout`` is fail; nothing ran."""

    INTERRUPTED = 130
    """SIGINT: running commands were stopped and the lock released."""

    TERMINATED = 143
    """SIGTERM: running commands were stopped and the lock released."""

    @property
    def retriable(self) -> bool:
        """Whether running the same job again can change the outcome."""
        return self not in (ExitCode.SUCCESS, ExitCode.INVALID_JOB, ExitCode.ROLE_MISMATCH)
