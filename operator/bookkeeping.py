"""kopf's bookkeeping on PgQuartzJobs: under ``pgquartz.io``, and small whatever the spec's size.

kopf remembers the last spec it handled, to tell a change from a replay. Its
stock storage copies the whole spec (and every label and annotation) into the
``last-handled-configuration`` annotation; annotations are limited to 256 KiB
in total, so a large job (one 300 KiB inline command, thousands of steps) made
kopf's own patch fail and the resource never got a status. Here the annotation
holds a digest of the spec only: kopf still sees whether the spec changed
(which is all the handlers react to, ``field="spec"``), but not how, and label
or annotation changes (Argo CD's tracking, kubectl's last-applied) are not
changes at all. An annotation written by the stock storage (the whole essence
as JSON) is still read, so upgrading loses nothing.

The finalizer and the storage prefix are chosen once: changing them later would
strand objects that carry the old ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

FINALIZER = "pgquartz.io/finalizer"
STORAGE_PREFIX = "pgquartz.io"
DIGEST_PREFIX = "sha256:"


def spec_digest(spec: Any) -> str:
    return DIGEST_PREFIX + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """The last handled spec as a digest in the ``pgquartz.io/last-handled-configuration`` annotation."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {"spec": dict(body.get("spec") or {})})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        for key in self.make_keys(self.key, body=body):
            stored = body.metadata.annotations.get(key)
            if stored is None:
                continue
            current = self.build(body=body)
            if stored.startswith(DIGEST_PREFIX):
                if stored.strip() == spec_digest(current["spec"]):
                    return current  # nothing changed since: no diff
                # Changed: an essence whose spec differs from the current one in every field.
                return cast(kopf.BodyEssence, {"spec": {"pgquartz.io/last-handled": stored.strip()}})
            old = json.loads(stored)  # written by kopf's stock storage
            return cast(kopf.BodyEssence, {"spec": old.get("spec") or {}})
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        digest = spec_digest(dict(essence).get("spec") or {})
        for key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[key] = digest
        self._store_marker(prefix=self.prefix, patch=patch, body=body)


def configure(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=STORAGE_PREFIX)
    return settings
