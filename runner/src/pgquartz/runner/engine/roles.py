"""Before anything runs: does each connection reach a server with the role the job expects?

PgQuartz's rule, kept: a connection whose ``role`` (``primary`` or ``standby``)
differs from its server's actual role stops the job before any step runs, unless
``runOnRoleError`` is set, in which case commands against it are skipped (the
executor skips them). A ``role`` on a command is a filter, not an expectation:
it skips that command when the server has another role and never stops the job.
"""

from __future__ import annotations

from collections.abc import Mapping

from pgquartz.runner.engine.dispatch import ConnectionExecutor
from pgquartz.runner.executors.identity import FailoverDetected
from pgquartz.runner.model.job import Job, Role


async def mismatches(job: Job, executors: Mapping[str, ConnectionExecutor]) -> list[str]:
    """One message per connection whose server has another role than configured.

    A server that cannot be reached is not a mismatch: its commands fail on their
    own, each with the connection error.
    """
    found = []
    for name, connection in job.connections.items():
        if connection.role is Role.ALL or name not in executors:
            continue
        try:
            actual = await executors[name].role()
        except FailoverDetected:
            raise
        except Exception:  # unreachable now: its commands will report why
            continue
        if actual != connection.role.value:
            found.append(
                f"connection {name!r} expects a {connection.role.value} but reaches a {actual}"
                f" ({_where(connection.conn_params)})"
            )
    return found


def _where(params: Mapping[str, str]) -> str:
    host = params.get("host", "default host")
    port = params.get("port")
    return f"{host}:{port}" if port else host
