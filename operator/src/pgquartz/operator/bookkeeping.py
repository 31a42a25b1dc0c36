"""kopf's bookkeeping on PgQuartzJobs: under ``pgquartz.io``, small whatever the spec's size, one write.

kopf remembers the last spec it handled, to tell a change from a replay. Its
stock storage copies the whole spec (and every label and annotation) into the
``last-handled-configuration`` annotation; annotations are limited to 256 KiB
in total, so a large job (one 300 KiB inline command, thousands of steps) made
kopf's own patch fail and the resource never got a status. Here it is a digest
of the spec only: kopf still sees whether the spec changed (which is all the
handlers react to, ``field="spec"``), but not how, and label or annotation
changes (Argo CD's tracking, kubectl's last-applied) are not changes at all.

All of kopf's bookkeeping lives in ``status.bookkeeping`` (the digest as
``handledSpec``, the progress of handlers being retried as ``progress``), so it
goes out in the same status write as the conditions: one write per
reconciliation, not a second patch of the resource (and a second watch event
to process) for kopf alone, and never a change of the metadata that GitOps
tools compare. What earlier versions wrote, the
``pgquartz.io/last-handled-configuration`` annotation (a digest, or kopf's
whole essence as JSON), is still read, and removed the next time the digest is
written, so upgrading loses nothing.

The finalizer and the storage prefix are chosen once: changing them later would
strand objects that carry the old ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

FINALIZER = "pgquartz.io/finalizer"
STORAGE_PREFIX = "pgquartz.io"
DIGEST_PREFIX = "sha256:"
BOOKKEEPING = "bookkeeping"
"""The status field that holds kopf's bookkeeping (an object of its own)."""
HANDLED_SPEC = "handledSpec"
"""Its field for the digest of the spec kopf last handled."""


def spec_digest(spec: Any) -> str:
    return DIGEST_PREFIX + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """The last handled spec as a digest in ``status.bookkeeping.handledSpec`` (formerly an annotation)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {"spec": dict(body.get("spec") or {})})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = ((body.get("status") or {}).get(BOOKKEEPING) or {}).get(HANDLED_SPEC)
        if stored is None:
            stored = next((body.metadata.annotations[key] for key in self._legacy_keys(body)), None)
        if stored is None:
            return None
        current = self.build(body=body)
        if stored.startswith(DIGEST_PREFIX):
            if stored.strip() == spec_digest(current["spec"]):
                return current  # nothing changed since: no diff
            # Changed: an essence whose spec differs from the current one in every field.
            return cast(kopf.BodyEssence, {"spec": {"pgquartz.io/last-handled": stored.strip()}})
        old = json.loads(stored)  # kopf's stock storage, in an annotation
        return cast(kopf.BodyEssence, {"spec": old.get("spec") or {}})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        digest = spec_digest(dict(essence).get("spec") or {})
        patch.setdefault("status", {}).setdefault(BOOKKEEPING, {})[HANDLED_SPEC] = digest
        for key in self._legacy_keys(body):
            patch.metadata.annotations[key] = None

    def _legacy_keys(self, body: kopf.Body) -> list[str]:
        annotations = body.metadata.annotations
        return [key for key in self._annotation_keys if key in annotations]

    @functools.cached_property
    def _annotation_keys(self) -> list[str]:
        """The annotation's possible names, formed once: kopf forms them anew (with a hash for long
        ones) on every call, and this one is asked twice per event of every resource. They depend on
        the body only for ReplicaSets of Deployments (kopf's ``mark_key``), never for PgQuartzJobs."""
        return list(self.make_keys(self.key))


class SpecOnlyProgressStorage(kopf.StatusProgressStorage):
    """kopf's status storage of handlers' progress, without deep copies of what holds no progress.

    Before every diff kopf asks the progress storage to remove its own fields from the two
    essences it compares, and the stock storage deep-copies both first: the whole spec, twice
    per event of every resource. Here an essence is the spec alone (DigestDiffBaseStorage), which
    never holds progress: it is returned as a new mapping over the same spec, which nothing
    changes (the diff reads it, the digest is taken from it)."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        if "status" in essence or "metadata" in essence:
            return super().clear(essence=essence)
        return cast(kopf.BodyEssence, dict(essence))


def configure(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = SpecOnlyProgressStorage(
        field=f"status.{BOOKKEEPING}.progress", touch_field=f"status.{BOOKKEEPING}.touched"
    )
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=STORAGE_PREFIX)
    return settings
