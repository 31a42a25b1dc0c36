"""What a reconciliation says it did: one event per outcome, naming every object it applies to."""

from __future__ import annotations

from pgquartz.operator import children


def test_objects_with_one_outcome_share_one_event() -> None:
    outcomes = {"ConfigMap": "created", "CronJob": "created"}
    assert children.outcome_messages(outcomes, "pgqj-x") == [
        ("created", "ConfigMap and CronJob pgqj-x created")
    ]


def test_each_outcome_gets_its_own_event_and_unchanged_objects_none() -> None:
    assert children.outcome_messages({"ConfigMap": "updated", "CronJob": "unchanged"}, "pgqj-x") == [
        ("updated", "ConfigMap pgqj-x updated")
    ]
    assert children.outcome_messages({"ConfigMap": "created", "CronJob": "updated"}, "pgqj-x") == [
        ("created", "ConfigMap pgqj-x created"),
        ("updated", "CronJob pgqj-x updated"),
    ]
    assert children.outcome_messages({"ConfigMap": "unchanged", "CronJob": "unchanged"}, "pgqj-x") == []
