"""Names the operator derives from a PgQuartzJob's name: unique per resource, and within every limit.

A PgQuartzJob's name may be any DNS-1123 subdomain of 1–253 characters, but
what the operator makes from it has tighter limits: a CronJob's name at most 52
characters (its Jobs append 11), a label value at most 63, a ConfigMap key at
most 253. Short names are kept as they are, so ``kubectl get cronjob`` reads
well; longer ones keep a readable prefix and end in 20 hex digits of the full
name's SHA-256 (80 bits: no one can choose a name that collides with another).

The two forms can never meet: a shortened value always has the full length of
its limit, a kept one is always shorter. Without that rule, a tenant could name
a resource exactly like the shortened child of another one and take over its
CronJob (or, for label values, read its runs as their own).
"""

from __future__ import annotations

import hashlib

PREFIX = "pgqj-"
CHILD_MAX = 52
"""The CronJob controller names Jobs ``<cronjob>-<8 digits>``, and a Job's name must fit a label."""
LABEL_MAX = 63
KEY_MAX = 253
DIGEST_LENGTH = 20


def digest(text: str, length: int = DIGEST_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _bounded(text: str, limit: int) -> str:
    """``text`` if shorter than ``limit``, else exactly ``limit`` characters ending in its digest."""
    if len(text) < limit:
        return text
    head = text[: limit - DIGEST_LENGTH - 1].replace(".", "-")
    return f"{head}-{digest(text)}"


def child_name(name: str) -> str:
    """The ConfigMap's and CronJob's name: ``pgqj-<name>``, or shortened to exactly 52 characters."""
    return _bounded(f"{PREFIX}{name}", CHILD_MAX)


def label_value(name: str) -> str:
    """The ``pgquartz.io/job`` label's value (the full name is in the ``pgquartz.io/job-name``
    annotation)."""
    return _bounded(name, LABEL_MAX)


def job_file_key(name: str) -> str:
    """The ConfigMap key of the job file: ``<name>.yml`` (the runner names the job after it)."""
    return _bounded(name, KEY_MAX - len(".yml")) + ".yml"


def run_now_job_name(child: str, request: str, version: str) -> str:
    """A manual run's Job: one per request as it was seen (so A → B → A runs three times)."""
    return f"{child}-now-{digest(f'{request}@{version}', 6)}"


def password_variable(connection: str) -> str:
    """The environment variable a connection's password comes in (connection names are ASCII
    identifiers: see resource.CONNECTION_NAME; two that map to one variable are refused there)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in connection.upper())
    return f"PGQ_PASSWORD_{cleaned}"
