"""The reference pages are generated from the model and the CRD, and never stale."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)


@pytest.mark.parametrize("page", sorted(generate.PAGES))
def test_the_reference_page_is_not_stale(page: str) -> None:
    assert (generate.REFERENCE / page).read_text() == generate.PAGES[page](), "run: python3 docs/generate.py"


def test_every_job_file_key_is_in_the_reference() -> None:
    from pgquartz.runner.model import job

    text = (generate.REFERENCE / "job-file.md").read_text()
    for name in job.json_schema()["properties"]:
        assert f"| `{name}`" in text


def test_every_crd_field_of_the_spec_is_in_the_reference() -> None:
    from pgquartz.operator import crd

    text = (generate.REFERENCE / "pgquartzjob.md").read_text()
    for name in crd.spec_schema()["properties"]:
        assert f"`spec.{name}`" in text
