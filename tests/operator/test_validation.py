"""The runner's planner run on rendered job files, its problems named as the PgQuartzJob's fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pgquartz.operator import manifests, validation
from tests.operator.test_crd import VALID_SPEC


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (("steps", "vacuum", "depends", 0), "spec.job.steps.vacuum.depends[0]"),
        (("checks", 1, "type"), "spec.job.checks[1].type"),
        (("connections", "primary", "conn_params", "hots"), "spec.connections.primary.params.hots"),
        (("etcdConfig", "endpoints"), "spec.lock.endpoints"),
        (("etcdConfig", "lockTimeout"), "spec.lock.ttl"),
        (("parallel",), "spec.job.parallel"),
        ((), "spec.job"),
    ],
)
def test_job_file_paths_are_shown_as_the_users_fields(path: tuple[str | int, ...], shown: str) -> None:
    assert validation.user_path(path) == shown


def render(spec: dict[str, Any], defaults: manifests.Defaults | None = None) -> dict[str, Any]:
    obj = {"metadata": {"name": "nightly", "namespace": "db", "uid": "u"}, "spec": spec}
    return manifests.render(
        obj, defaults=defaults or manifests.Defaults(etcd_endpoints=("etcd:2379",))
    ).config_map


def test_a_valid_job_has_no_problems() -> None:
    assert validation.job_file_problems(render(copy.deepcopy(VALID_SPEC))) == []


def test_a_cycle_is_reported_once_even_with_several_targets() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"] = {
        "a": {"depends": ["b"], "commands": [{"inline": "true"}]},
        "b": {"depends": ["a"], "commands": [{"inline": "true"}]},
    }
    spec["targets"] = [{"name": "node-a"}, {"name": "node-b"}, {"name": "node-c"}]
    problems = validation.job_file_problems(render(spec))
    assert len(problems) == 1 and "cycle" in problems[0] and problems[0].startswith("spec.job.steps.")


def test_a_rule_reading_an_unknown_step_is_reported() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["job"]["steps"]["report"] = {
        "when": ['eq .Steps["vacum"].Rc 0'],
        "commands": [{"inline": "echo done"}],
    }
    [problem] = validation.job_file_problems(render(spec))
    assert (
        problem == "spec.job.steps.report.when[0]: rule reads unknown step 'vacum' (did you mean 'vacuum'?)"
    )


def test_file_scripts_must_be_keys_of_the_scripts_config_map() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["scripts"] = {"configMapRef": {"name": "maintenance-scripts"}}
    spec["job"]["steps"]["archive"] = {
        "commands": [
            {"file": "archive.sh"},
            {"file": "./rotate.sh"},
            {"file": "/usr/local/bin/in-the-image.sh"},  # not in the ConfigMap: the pod checks it
        ]
    }
    rendered = render(spec)
    assert validation.script_problems(rendered, {"archive.sh", "rotate.sh"}, "maintenance-scripts") == []
    assert validation.script_problems(rendered, {"archive.sh"}, "maintenance-scripts") == [
        "spec.job.steps.archive.commands[1].file: './rotate.sh' is not a key of ConfigMap"
        " 'maintenance-scripts'"
    ]


def test_checking_a_job_stops_at_its_time_budget() -> None:
    """One tenant's spec cannot hold the operator: past the budget, the job is refused as such."""
    spec = copy.deepcopy(VALID_SPEC)
    for n in range(50):
        spec["job"]["steps"][f"s{n}"] = {
            "when": ['steps["vacuum"].rc == 0'],
            "commands": [{"inline": "true"}],
        }
    config_map = render(spec)
    assert validation.job_file_problems(config_map) == []
    [problem] = validation.job_file_problems(config_map, budget_seconds=0)
    assert problem.startswith("spec.job: checking the job took longer than 0 s (PGQUARTZ_VALIDATION_SECONDS)")
