"""Who holds a job's lock, since when, and who waits: what ``pgquartz lock status`` shows."""

from __future__ import annotations

import dataclasses
from typing import Any

from pgquartz.runner.lock import mutex
from pgquartz.runner.lock.client import Client
from pgquartz.runner.model.job import EtcdConfig


@dataclasses.dataclass(frozen=True)
class LockStatus:
    key: str
    prefix: str
    holder: mutex.Contender | None
    waiting: tuple[mutex.Contender, ...]
    revision: int

    def to_dict(self) -> dict[str, Any]:
        def entry(contender: mutex.Contender) -> dict[str, Any]:
            return {
                "key": contender.key.decode(errors="replace"),
                "revision": contender.create_revision,
                "lease": f"{contender.lease:x}",
                **contender.value,
            }

        return {
            "lockKey": self.key,
            "prefix": self.prefix,
            "holder": entry(self.holder) if self.holder else None,
            "waiting": [entry(waiter) for waiter in self.waiting],
            "revision": self.revision,
        }


async def read(config: EtcdConfig, *, lock_key: str) -> LockStatus:
    client = Client(config)
    try:
        prefix = mutex.prefix_for(lock_key)
        everyone, revision = await mutex.contenders(client, prefix)
    finally:
        await client.close()
    return LockStatus(
        key=lock_key,
        prefix=prefix.decode(),
        holder=everyone[0] if everyone else None,
        waiting=tuple(everyone[1:]),
        revision=revision,
    )


def describe(status: LockStatus, endpoints: list[str]) -> list[str]:
    lines = [f"lock {status.key!r} (etcd keys {status.prefix}…) on {', '.join(endpoints)}"]
    if status.holder is None:
        lines.append("  free: nobody holds or waits for it")
        return lines
    lines.append(
        f"  held by {_who(status.holder)}, since {_since(status.holder)}"
        f" (fencing revision {status.holder.create_revision})"
    )
    if status.waiting:
        lines.append(f"  waiting ({len(status.waiting)}), in the order they will run:")
        for number, waiter in enumerate(status.waiting, 1):
            lines.append(f"    {number}. {_who(waiter)}, waiting since {waiter.value.get('started', '?')}")
    else:
        lines.append("  nobody waits")
    return lines


def _who(contender: mutex.Contender) -> str:
    value = contender.value
    if "raw" in value or not value:
        return f"a runner without identity (PgQuartz?), lease {contender.lease:x}"
    where = value.get("pod") or value.get("host") or "?"
    host = (
        f" on {value['host']}"
        if value.get("pod") and value.get("host") and value["pod"] != value["host"]
        else ""
    )
    return f"{where}{host} pid {value.get('pid', '?')} (job {value.get('job', '?')})"


def _since(contender: mutex.Contender) -> str:
    return str(contender.value.get("acquired") or contender.value.get("started") or "?")
