"""The Events the handlers post: about the resource, named after it, typed, their messages bounded."""

from __future__ import annotations

from pgquartz.operator import events

OWNER = {
    "apiVersion": "pgquartz.io/v1alpha1",
    "kind": "PgQuartzJob",
    "metadata": {"name": "nightly", "namespace": "db", "uid": "u-1", "resourceVersion": "7"},
    "spec": {"schedule": "15 23 * * *"},
}


def test_an_event_is_about_its_resource_in_its_namespace() -> None:
    event = events.event(OWNER, warning=False, reason="Created", message="made", now="2026-12-04T20:00:00Z")
    assert event == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": "db", "generateName": "nightly."},
        "involvedObject": {
            "apiVersion": "pgquartz.io/v1alpha1",
            "kind": "PgQuartzJob",
            "name": "nightly",
            "namespace": "db",
            "uid": "u-1",
        },
        "type": "Normal",
        "reason": "Created",
        "message": "made",
        "source": {"component": "pgquartz-operator"},
        "reportingComponent": "pgquartz-operator",
        "firstTimestamp": "2026-12-04T20:00:00Z",
        "lastTimestamp": "2026-12-04T20:00:00Z",
        "count": 1,
    }


def test_a_warning_is_typed_so() -> None:
    event = events.event(OWNER, warning=True, reason="InvalidSpec", message="bad", now="2026-12-04T20:00:00Z")
    assert event["type"] == "Warning"


def test_a_long_name_leaves_room_for_the_servers_random_suffix() -> None:
    owner = {**OWNER, "metadata": {**OWNER["metadata"], "name": "n" * 253}}
    event = events.event(owner, warning=False, reason="Created", message="m", now="2026-12-04T20:00:00Z")
    assert event["metadata"]["generateName"] == "n" * 57 + "."
    assert event["involvedObject"]["name"] == "n" * 253


def test_a_long_message_keeps_its_start_and_its_end_within_the_limit() -> None:
    message = "start " + "x" * 3000 + " end"
    shortened = events.shortened(message)
    assert len(shortened) == events.MAX_MESSAGE
    assert shortened.startswith("start x") and shortened.endswith("x end") and "..." in shortened
    assert events.shortened("short") == "short"
    assert events.shortened("y" * events.MAX_MESSAGE) == "y" * events.MAX_MESSAGE
