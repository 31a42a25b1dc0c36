"""The built-in gates as queries and verdicts: what to ask the server, and whether the answer lets work start.

Pure: the engine runs the query this module writes (on the gate's connection,
with the runner's own backend pids as the one parameter where it matters) and
hands the row back to :func:`verdict`. Every query returns one row of
``(measured value, detail)``: the detail names what holds the gate closed (the
standby, the session, the backup) so the report says why the run waits.

Sources: the statistics views of the PostgreSQL manual (``pg_stat_replication``,
``pg_stat_activity``, ``pg_stat_progress_basebackup``) and its recovery
functions. A user without ``pg_monitor`` (or ``pg_read_all_stats``) sees other
users' sessions without their ``xact_start`` and a standby's ``replay_lsn`` as
NULL: those gates then cannot see what they should, which docs/job-file.md says.
"""

from __future__ import annotations

import datetime
from typing import Any

from pgquartz.runner.model import durations
from pgquartz.runner.model.gates import Gate

_PRIMARY_LAG_BYTES = """\
select coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::bigint,
       string_agg(coalesce(nullif(application_name, ''), client_addr::text, 'standby ' || pid) || ': '
                  || coalesce(pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 'unknown')
                  || ' behind', ', ' order by pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) desc)
from pg_stat_replication"""

_PRIMARY_LAG_SECONDS = """\
select coalesce(extract(epoch from max(replay_lag)), 0)::float8,
       string_agg(coalesce(nullif(application_name, ''), client_addr::text, 'standby ' || pid) || ': '
                  || coalesce(replay_lag::text, '0') || ' behind', ', ' order by replay_lag desc nulls last)
from pg_stat_replication"""

_STANDBY_LAG_BYTES = """\
select coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint,
       'replay is ' || pg_size_pretty(coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                                               pg_last_wal_replay_lsn()), 0))
       || ' behind what this standby received'"""

_STANDBY_LAG_SECONDS = """\
select case when pg_last_wal_receive_lsn() is null or pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
            then 0
            else coalesce(extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp()), 0)
       end::float8,
       'last replayed transaction from ' || coalesce(pg_last_xact_replay_timestamp()::text, 'never')"""

_TRANSACTION_AGE = """\
select coalesce(extract(epoch from max(clock_timestamp() - xact_start)), 0)::float8,
       (select 'pid ' || pid || ' (' || coalesce(nullif(application_name, ''), usename::text, '?') || ', '
               || coalesce(state, '?') || ') open since ' || xact_start
        from pg_stat_activity
        where xact_start is not null and backend_type = 'client backend'
              and pid <> pg_backend_pid() and pid <> all($1::int[])
        order by xact_start limit 1)
from pg_stat_activity
where xact_start is not null and backend_type = 'client backend'
      and pid <> pg_backend_pid() and pid <> all($1::int[])"""

_BACKUPS = r"""
select (select count(*) from pg_stat_progress_basebackup)
       + (select count(*) from pg_stat_activity
          where pid <> pg_backend_pid() and state like 'idle%'
                and query ~* '\mpg_(backup_start|start_backup)\s*\(')::bigint,
       concat_ws(', ',
         (select string_agg('base backup (pid ' || pid || ', ' || phase || ')', ', ')
          from pg_stat_progress_basebackup),
         (select string_agg('low-level backup started by pid ' || pid
                            || coalesce(' (' || nullif(application_name, '') || ')', ''), ', ')
          from pg_stat_activity
          where pid <> pg_backend_pid() and state like 'idle%'
                and query ~* '\mpg_(backup_start|start_backup)\s*\('))"""


def query(gate: Gate, *, role: str, own_pids: list[int]) -> tuple[str, tuple[str, ...] | None]:
    """The SQL for a built-in gate on a server with this role, and its ``$n`` parameters as text
    (None: none, and the text is sent as written)."""
    if gate.kind == "maxReplicationLag":
        assert gate.max_replication_lag is not None
        in_bytes = gate.max_replication_lag.bytes is not None
        if role == "primary":
            return (_PRIMARY_LAG_BYTES if in_bytes else _PRIMARY_LAG_SECONDS), None
        return (_STANDBY_LAG_BYTES if in_bytes else _STANDBY_LAG_SECONDS), None
    if gate.kind == "maxTransactionAge":
        return _TRANSACTION_AGE, ("{" + ",".join(str(pid) for pid in own_pids) + "}",)
    if gate.kind == "noBackupRunning":
        return _BACKUPS.strip(), None
    raise ValueError(f"not a built-in gate: {gate.kind}")


def verdict(gate: Gate, row: tuple[Any, ...] | None) -> str | None:
    """None when the gate holds, else why it does not (what the query measured, and what it found)."""
    value = float(row[0]) if row and row[0] is not None else 0.0
    detail = f": {row[1]}" if row and len(row) > 1 and row[1] else ""
    if gate.kind == "maxReplicationLag":
        limit = gate.max_replication_lag
        assert limit is not None
        if limit.bytes is not None:
            if value <= limit.bytes:
                return None
            return f"replication lag {_bytes(value)} is over {limit}{detail}"
        assert limit.seconds is not None
        if value <= limit.seconds:
            return None
        return f"replication lag {_seconds(value)} is over {limit}{detail}"
    if gate.kind == "maxTransactionAge":
        assert gate.max_transaction_age is not None
        if value <= gate.max_transaction_age.total_seconds():
            return None
        return (
            f"a transaction has been open for {_seconds(value)},"
            f" over {durations.format(gate.max_transaction_age)}{detail}"
        )
    if gate.kind == "noBackupRunning":
        if value == 0:
            return None
        return f"a backup is running{detail}"
    raise ValueError(f"not a built-in gate: {gate.kind}")


def _bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{int(value)}B"


def _seconds(value: float) -> str:
    return durations.format(datetime.timedelta(seconds=round(value, 1)))
