"""The emulator reads label selectors as apimachinery does."""

from __future__ import annotations

import pytest

from tests.support.apiserver import selectors

LABELS = {"app.kubernetes.io/managed-by": "pgquartz-operator", "pgquartz.io/job": "nightly", "tier": ""}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ("", True),
        ("pgquartz.io/job", True),
        ("!pgquartz.io/job", False),
        ("pgquartz.io/job,app.kubernetes.io/managed-by=pgquartz-operator", True),
        ("pgquartz.io/job,app.kubernetes.io/managed-by=someone-else", False),
        ("pgquartz.io/job==nightly", True),
        ("pgquartz.io/job!=nightly", False),
        ("missing!=x", True),
        ("tier=", True),
        ("pgquartz.io/job in (weekly, nightly)", True),
        ("pgquartz.io/job notin (weekly, nightly)", False),
        ("missing notin (a)", True),
        (" pgquartz.io/job , tier ", True),
    ],
)
def test_selectors_select_as_the_api_server_does(selector: str, selected: bool) -> None:
    assert selectors.matches(selectors.parse(selector), LABELS) is selected


@pytest.mark.parametrize("selector", ["a in b", "=x", "a=b=c", "a in (b", "a b", "-a"])
def test_malformed_selectors_are_refused(selector: str) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.parse(selector)
