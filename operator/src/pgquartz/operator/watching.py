"""Which Jobs and CronJobs kopf streams: only those with the operator's labels, chosen by the server.

A handler's ``labels=`` filter is applied inside the operator, after kopf has listed,
watched, parsed and queued every Job and CronJob it can see: on a shared cluster with
10 000 Jobs of other teams, the operator would pay memory and CPU for each of them.
Label selectors in ``settings.watching`` go to the server with the list and the watch,
so only objects that carry the operator's labels ever arrive. The handlers keep the
same filters, and their ownership checks still decide: a label anyone can set does
not make a Job a run of a PgQuartzJob.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from pgquartz.operator import manifests

CRON_JOB_LABELS: Mapping[str, str | None] = {
    manifests.LABEL_NAME: None,
    manifests.LABEL_MANAGED: manifests.MANAGER,
}
"""The labels of the CronJobs the operator renders (None: present, with any value)."""

JOB_LABELS: Mapping[str, str | None] = {manifests.LABEL_NAME: None}
"""The labels of its runs' Jobs, from the CronJob's jobTemplate or run-now."""


def selector(labels: Mapping[str, str | None]) -> str:
    """A label selector as the API reads it: ``key`` for presence, ``key=value`` for a value."""
    return ",".join(key if value is None else f"{key}={value}" for key, value in sorted(labels.items()))


def handler_filter(labels: Mapping[str, str | None]) -> dict[str, Any]:
    """The same labels as a kopf handler's ``labels=`` filter."""
    return {key: kopf.PRESENT if value is None else value for key, value in labels.items()}


def configure(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    settings.watching.label_selectors["batch", "cronjobs"] = selector(CRON_JOB_LABELS)
    settings.watching.label_selectors["batch", "jobs"] = selector(JOB_LABELS)
    return settings
