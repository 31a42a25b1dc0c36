"""The Argo CD health check, run by a real Lua interpreter (lupa) as Argo CD would run it."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from lupa import LuaRuntime

SCRIPT = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "argocd" / "health.lua").read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({key: to_lua(item) for key, item in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(item) for item in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(SCRIPT)
    return result["status"], result["message"]


def resource(
    conditions: list[dict[str, str]] | None, *, generation: int = 2, observed: int = 2, suspend: bool = False
) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"generation": generation}, "spec": {"suspend": suspend}}
    if conditions is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions}
    return obj


READY = {"type": "Ready", "status": "True", "reason": "ObjectsInPlace", "message": "CronJob in place"}
RAN = {"type": "LastRunSucceeded", "status": "True", "reason": "RunSucceeded", "message": "all checks passed"}
FAILED = {
    "type": "LastRunSucceeded",
    "status": "False",
    "reason": "ChecksFailed",
    "message": "check failed: x",
}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(None), ("Progressing", "Waiting for the pgquartz operator")),
        (
            resource([READY], observed=1),
            ("Progressing", "The pgquartz operator has not handled the latest change yet"),
        ),
        (
            resource([{**READY, "status": "False", "message": "invalid schedule"}]),
            ("Degraded", "invalid schedule"),
        ),
        (
            resource([{**READY, "status": "False", "reason": "MissingReference", "message": "no Secret"}]),
            ("Progressing", "no Secret"),
        ),
        (resource([READY], suspend=True), ("Suspended", "The schedule is suspended")),
        (resource([READY]), ("Healthy", "Scheduled; no run has finished yet")),
        (resource([READY, RAN]), ("Healthy", "all checks passed")),
        (resource([READY, FAILED]), ("Degraded", "Last run failed: check failed: x")),
    ],
)
def test_health_follows_the_conditions(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj) == expected
