"""Which server a session reached: cluster, timeline and role, and what changed since the run began.

PgQuartz checks a connection's role once, at start. A failover during a long
maintenance run then goes unnoticed: the runner reconnects (a host list with
``target_session_attrs=read-write`` reaches the new primary) and carries on
against another server, half-way through its work. Each session records its
server's :class:`Identity` when it opens; the first one of a run is the
reference, and every later one is compared with it: another
``system_identifier`` means another cluster behind the same name, a higher
timeline means a promotion happened, another role means the server changed
sides. What then happens is the connection's ``onFailover`` policy.

The query costs a round trip, so it runs when a session opens, and again on a
session already open when its server's ``in_hot_standby`` report (free: the
server sends it with every reply when it changes, PostgreSQL 14+) says its role
changed, or when the last check is older than :data:`RECHECK_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pgquartz.runner.model import records
from pgquartz.runner.model.job import OnFailover

RECHECK_SECONDS = 1.0
"""A session already open is asked its timeline again at most this often (only when a command runs)."""

QUERY = """\
select pg_is_in_recovery(),
       (select system_identifier::text from pg_control_system()),
       case when pg_is_in_recovery()
            then coalesce((select received_tli from pg_stat_wal_receiver),
                          (select timeline_id from pg_control_checkpoint()))
            else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       end"""
"""Role, cluster and timeline in one round trip (a standby's is the timeline it receives or replays)."""

FALLBACK_QUERY = "select pg_is_in_recovery(), null, null"
"""For a user who may not call pg_control_system(): the role alone (failover then shows as a role change)."""


class Identity(records.Record):
    role: str
    """``primary`` or ``standby``."""
    system_identifier: str | None
    timeline: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "systemIdentifier": self.system_identifier, "timeline": self.timeline}

    def __str__(self) -> str:
        parts = [self.role]
        if self.timeline is not None:
            parts.append(f"timeline {self.timeline}")
        if self.system_identifier is not None:
            parts.append(f"system {self.system_identifier}")
        return ", ".join(parts)


def from_row(row: Any) -> Identity:
    """The identity from :data:`QUERY`'s row (values in PostgreSQL's text format)."""
    in_recovery, system_identifier, timeline = row
    return Identity(
        role="standby" if in_recovery in ("t", True) else "primary",
        system_identifier=None if system_identifier is None else str(system_identifier),
        timeline=None if timeline is None else int(timeline),
    )


def changes(before: Identity, after: Identity) -> list[str]:
    """What differs, in words, most serious first; empty when it is the same server as far as it matters.

    A standby whose timeline is unknown on one side (not receiving, or no access) is not a change.
    """
    found = []
    if (
        before.system_identifier is not None
        and after.system_identifier is not None
        and before.system_identifier != after.system_identifier
    ):
        found.append(
            f"another cluster (system identifier {before.system_identifier} → {after.system_identifier})"
        )
    if before.timeline is not None and after.timeline is not None and after.timeline > before.timeline:
        found.append(f"timeline {before.timeline} → {after.timeline} (a promotion happened)")
    if before.role != after.role:
        found.append(f"role {before.role} → {after.role}")
    return found


def reported_role(in_hot_standby: str | None) -> str | None:
    """The role the server last reported with ``in_hot_standby`` (None on servers before 14)."""
    if in_hot_standby is None:
        return None
    return "standby" if in_hot_standby == "on" else "primary"


class FailoverDetected(Exception):
    """A connection reached another server than the run's first; its policy is to abort."""

    def __init__(self, connection: str, before: Identity, after: Identity, found: list[str]) -> None:
        super().__init__(
            f"connection {connection!r} reaches another server than when the run began: {'; '.join(found)}"
        )
        self.connection = connection
        self.before = before
        self.after = after
        self.changes = found


class FailoverSeen(records.Record):
    """A session reached another server than the run's first; ``action`` is what the policy did."""

    connection: str
    before: Identity
    after: Identity
    changes: list[str]
    action: OnFailover

    def to_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "changes": self.changes,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "action": self.action.value,
        }


OnFailoverSeen = Callable[[FailoverSeen], None]
