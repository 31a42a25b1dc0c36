"""The Events the handlers post about a PgQuartzJob, as ``kubectl describe`` and ``get events`` show them.

kopf can post events too, from its own loop through aiohttp: for a new resource
that one request cost more of the operator's CPU than the handler's own four.
The handlers post them with the requests they already make (through the
official client, pgquartz.operator.kubeapi), so this module only builds the object: a core/v1
Event about the resource, named after it, from the ``pgquartz-operator``
component, its message cut in the middle to the 1024 characters the API server
keeps. Posting one is never a reason for a reconciliation to fail: one the API
fails to take for now is left to kopf's poster (which retries it), a refused one
is logged, and the handler goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COMPONENT = "pgquartz-operator"
NAME_PREFIX = 57
"""Characters of the resource's name that start an Event's: the API server adds five random ones and
keeps generated names within 63."""
MAX_MESSAGE = 1024
CUT = "..."


def shortened(message: str) -> str:
    """``message`` if it fits, else its start and end around ``...``: both ends say something."""
    if len(message) <= MAX_MESSAGE:
        return message
    keep = MAX_MESSAGE - len(CUT)
    return message[: keep - keep // 2] + CUT + message[len(message) - keep // 2 :]


def event(owner: Mapping[str, Any], *, warning: bool, reason: str, message: str, now: str) -> dict[str, Any]:
    """The Event about ``owner`` (a PgQuartzJob as the API has it); ``now`` as RFC 3339 seconds."""
    metadata = owner["metadata"]
    namespace = metadata["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": f"{metadata['name'][:NAME_PREFIX]}."},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": metadata["name"],
            "namespace": namespace,
            "uid": metadata.get("uid"),
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": shortened(message),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
