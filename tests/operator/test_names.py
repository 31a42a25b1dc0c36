"""Derived names: within Kubernetes' limits for every valid resource name, and never shared."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pgquartz.operator import names

LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SUBDOMAIN = re.compile(rf"^{LABEL}(\.{LABEL})*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

dns_labels = st.from_regex(re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII), fullmatch=True)
resource_names = st.lists(dns_labels, min_size=1, max_size=8).map(".".join).filter(lambda n: len(n) <= 253)


@given(resource_names)
def test_every_derived_name_fits_its_limit(name: str) -> None:
    child = names.child_name(name)
    assert len(child) <= names.CHILD_MAX and SUBDOMAIN.match(child), child
    label = names.label_value(name)
    assert len(label) <= names.LABEL_MAX and LABEL_VALUE.match(label), label
    key = names.job_file_key(name)
    assert len(key) <= names.KEY_MAX and CONFIG_MAP_KEY.match(key) and key.endswith(".yml")
    job = names.run_now_job_name(child, "request", "42")
    assert len(job) <= 63 and SUBDOMAIN.match(job)
    assert len(f"{child}-29390128") <= 63  # the CronJob controller's Jobs fit a label too


@given(resource_names, resource_names)
def test_different_names_never_share_a_child_or_a_label(first: str, second: str) -> None:
    if first != second:
        assert names.child_name(first) != names.child_name(second)
        assert names.label_value(first) != names.label_value(second)
        assert names.job_file_key(first) != names.job_file_key(second)


@given(resource_names)
def test_a_name_chosen_to_look_like_a_shortened_child_gets_its_own(name: str) -> None:
    """The attack of the issue: name a resource like the shortened child of another one."""
    for derive, prefix in ((names.child_name, names.PREFIX), (names.label_value, "")):
        shortened = derive(name)
        lookalike = shortened[len(prefix) :]
        if lookalike != name:
            assert derive(lookalike) != shortened


def test_the_long_name_of_the_issue_and_its_lookalike_differ() -> None:
    victim = "nightly-vacuum-of-the-orders-database-in-the-eu-west-region"
    child = names.child_name(victim)
    assert len(child) == names.CHILD_MAX and child.startswith("pgqj-nightly-vacuum-of-the-orde")
    assert names.child_name(child.removeprefix(names.PREFIX)) != child


def test_short_names_are_kept_readable() -> None:
    assert names.child_name("nightly") == "pgqj-nightly"
    assert names.label_value("nightly") == "nightly"
    assert names.job_file_key("nightly") == "nightly.yml"
