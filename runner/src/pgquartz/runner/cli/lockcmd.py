"""``pgquartz lock status``: who holds a job's etcd lock, since when, and who waits."""

from __future__ import annotations

import asyncio
import json
import sys

from pgquartz.runner.cli import inspect
from pgquartz.runner.model.exitcodes import ExitCode


def status(path: str, *, as_json: bool) -> int:
    loaded = inspect.load_or_report(path)
    if loaded is None:
        return ExitCode.INVALID_JOB
    config = loaded.job.etcd_config
    if config is None:
        print(f"pgquartz: {path} has no etcdConfig: it runs without a lock", file=sys.stderr)
        return ExitCode.INVALID_JOB
    from pgquartz.runner.lock import guard
    from pgquartz.runner.lock import status as lock_status

    key = guard.lock_key(config, loaded.name)
    try:
        found = asyncio.run(asyncio.wait_for(lock_status.read(config, lock_key=key), timeout=15))
    except Exception as error:  # etcd down, refused, slow: say so, never a traceback
        reason = str(error) or type(error).__name__
        print(f"pgquartz: cannot read the etcd lock {key!r}: {reason}", file=sys.stderr)
        return ExitCode.LOCK_NOT_ACQUIRED
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        print("\n".join(lock_status.describe(found, config.endpoints)))
    return ExitCode.SUCCESS
