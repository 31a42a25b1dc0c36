"""The job model on pydantic: one validation pass finds every problem, each at its key path and in a
job file's words; instances are frozen and written back as job files write them."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pydantic
import pytest

from pgquartz.runner.model import Job, Step
from pgquartz.runner.model.base import ModelError
from pgquartz.runner.model.retry import Retry


def problems(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ModelError) as caught:
        Job.from_data(data)
    return [(problem.path, problem.message) for problem in caught.value.problems]


def test_every_problem_is_found_in_one_pass_each_at_its_key_path() -> None:
    found = problems(
        {
            "parallel": "many",
            "steps": {
                "a": {"commands": [{"inline": "true", "batchMode": "sometimes"}, {"name": 3, "inline": "x"}]},
                "b": {"commands": [], "depend": ["a"]},
            },
            "timeout": "soon",
        }
    )
    assert sorted(found, key=str) == sorted(
        [
            (("parallel",), "input should be a valid integer, got 'many'"),
            (("steps", "a", "commands", 0, "batchMode"), "input should be a valid boolean, got 'sometimes'"),
            (("steps", "a", "commands", 1, "name"), "input should be a valid string, got 3"),
            (("steps", "b", "commands"), "must not be empty"),
            (("steps", "b", "depend"), "unknown key 'depend' (did you mean 'depends'?)"),
            (
                ("timeout",),
                "expected a duration like '75s', '1m30s' or '1h' (units: h, m, s, ms, us, ns), got 'soon'",
            ),
        ],
        key=str,
    )


def test_a_check_across_keys_runs_only_once_its_keys_are_valid() -> None:
    # the command's own rule (inline or file) is not reported on top of its broken key
    assert problems({"steps": {"s": {"commands": [{"file": 3}]}}}) == [
        (("steps", "s", "commands", 0, "file"), "input should be a valid string, got 3")
    ]
    assert problems({"steps": {"s": {"commands": [{"name": "x"}]}}}) == [
        (("steps", "s", "commands", 0), "set 'inline' (the command itself) or 'file' (a script or SQL file)")
    ]


def test_missing_keys_and_wrong_shapes_say_what_was_expected() -> None:
    assert problems({}) == [(("steps",), "missing required key 'steps'")]
    assert problems([]) == [((), "input should be a mapping, got a list")]
    assert problems({"steps": {"s": "echo hi"}}) == [
        (("steps", "s"), "input should be a mapping, got 'echo hi'")
    ]
    assert problems({"steps": {"s": {"commands": {"inline": "x"}}}}) == [
        (("steps", "s", "commands"), "input should be a list, got a mapping")
    ]
    assert problems({"steps": {1: {"commands": [{"inline": "x"}]}}}) == [
        (("steps", 1), "a key should be a string, got 1")
    ]
    assert problems({"steps": {"s": {"commands": [{"inline": "x", "role": "leader"}]}}}) == [
        (("steps", "s", "commands", 0, "role"), "input should be 'primary', 'standby' or 'all', got 'leader'")
    ]


def test_an_unknown_key_with_no_near_miss_lists_the_keys_allowed_there() -> None:
    [(path, message)] = problems({"steps": {"s": {"commands": [{"inline": "x"}]}}, "zzz": 1})
    assert path == ("zzz",)
    assert message.startswith("unknown key 'zzz'; allowed here: steps, checks, connections, etcdConfig")


def test_keys_are_read_as_written_in_files_or_by_field_name_but_not_both() -> None:
    by_alias = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}, "runOnRoleError": True})
    by_name = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}, "run_on_role_error": True})
    assert by_alias == by_name and by_alias.run_on_role_error is True
    assert problems({"steps": {"s": {"commands": [{"inline": "x"}]}}, "logFile": "a", "log_file": "b"}) == [
        (("log_file",), "'log_file' is 'logFile' again: give it once")
    ]


def test_mappings_with_the_same_keys_are_each_checked_in_full() -> None:
    # How a set of keys is read is worked out once; the values, and the keys' own problems,
    # are still checked for every mapping that has them.
    commands: list[dict[str, Any]] = [
        {"inline": "a", "name": "one"},
        {"inline": "b", "name": 2},
        {"name": "three", "inline": "c"},
        {"inline": "d", "bogus": 1},
        {"inline": "e", "bogus": 1},
        {"name": "f"},
        {"name": "g"},
        {"inline": "h", "batchMode": True, "batch_mode": False},
        {"inline": "i", "batchMode": True, "batch_mode": False},
    ]
    found = problems({"steps": {"s": {"commands": commands}}})
    where = ("steps", "s", "commands")
    unknown = "unknown key 'bogus'; allowed here: name, type, role, inline, file, batchMode, retry"
    assert found == [
        ((*where, 1, "name"), "input should be a valid string, got 2"),
        ((*where, 3, "bogus"), unknown),
        ((*where, 4, "bogus"), unknown),
        ((*where, 5), "set 'inline' (the command itself) or 'file' (a script or SQL file)"),
        ((*where, 6), "set 'inline' (the command itself) or 'file' (a script or SQL file)"),
        ((*where, 7, "batch_mode"), "'batch_mode' is 'batchMode' again: give it once"),
        ((*where, 8, "batch_mode"), "'batch_mode' is 'batchMode' again: give it once"),
    ]
    good = [command for index, command in enumerate(commands) if index in (0, 2)]
    read = Job.from_data({"steps": {"s": {"commands": [*good, {"inline": "x", "batch_mode": True}]}}})
    assert [(c.name, c.inline, c.batch_mode) for c in read.steps["s"].commands] == [
        ("one", "a", False),
        ("three", "c", False),
        ("", "x", True),
    ]


def test_a_thousand_orders_of_the_same_keys_read_alike() -> None:
    orders = itertools.permutations(["name", "type", "role", "inline", "batchMode", "retry"])
    values = {"name": "n", "type": "pg", "role": "all", "inline": "x", "batchMode": True, "retry": None}
    many = [{key: values[key] for key in order} for order in orders]  # 720 orders of the same keys
    job = Job.from_data({"connections": {"pg": {}}, "steps": {"s": {"commands": many}}})
    assert len(job.steps["s"].commands) == 720
    assert {(c.name, c.type, c.inline, c.batch_mode) for c in job.steps["s"].commands} == {
        ("n", "pg", "x", True)
    }
    wrong = [{"inline": "x", f"bogus{index}": 1} for index in range(50)]
    assert len(problems({"steps": {"s": {"commands": wrong}}})) == 50


@pytest.mark.parametrize(
    ("given", "read"), [(True, True), ("yes", True), ("off", False), (0, False), ("1", True)]
)
def test_booleans_read_the_words_yaml_11_tools_write(given: object, read: bool) -> None:
    job = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}, "debug": given})
    assert job.debug is read


@pytest.mark.parametrize(("given", "read"), [(4, 4), ("4", 4), (4.0, 4)])
def test_whole_numbers_may_be_written_as_text_or_floats(given: object, read: int) -> None:
    assert (
        Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}, "parallel": given}).parallel == read
    )


@pytest.mark.parametrize("given", [True, 2.5, "2.5", None, "+-3", "٣"])
def test_a_boolean_or_a_fraction_is_no_whole_number(given: object) -> None:
    [(path, message)] = problems({"steps": {"s": {"commands": [{"inline": "x"}]}}, "parallel": given})
    assert path == ("parallel",) and message.startswith("input should be a valid integer")


def test_instances_are_frozen_and_compare_by_value() -> None:
    job = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        job.parallel = 2  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        del job.steps["s"].commands[0].inline
    assert job == Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}})
    assert job != Job.from_data({"steps": {"s": {"commands": [{"inline": "y"}]}}})
    assert Retry(on=["40001"]) == Retry.from_data({"on": ["40001"]})


def test_constructing_with_keywords_validates_like_data_and_takes_instances() -> None:
    step = Step.from_data({"commands": [{"inline": "x"}]})
    assert Job(steps={"s": step}).steps["s"] is step
    with pytest.raises(ModelError, match=r"commands: must not be empty"):
        Step.from_data({"commands": []})
    with pytest.raises(pydantic.ValidationError, match="at least 1 item"):  # pydantic's own words
        Step(commands=[])


def test_written_back_data_reads_back_to_the_same_job_and_leaves_out_defaults() -> None:
    data = {
        "steps": {
            "s": {
                "commands": [
                    {"type": "pg", "inline": "select 1", "retry": {"on": ["serialization_failure"]}},
                    {"inline": "true", "batchMode": False},
                ],
                "matrix": {"n": [1, 2]},
                "gates": {"require": [{"maxReplicationLag": "16MiB"}], "wait": "90s"},
            }
        },
        "connections": {"pg": {"role": "primary", "conn_params": {"port": 5432}}},
        "timeout": "1h30m",
        "etcdConfig": {},
        "git": {"httpUser": "me", "httpPassword": "secret"},
    }
    job = Job.from_data(data)
    written = job.to_data(exclude_defaults=True)
    assert written == {
        "steps": {
            "s": {
                "commands": [
                    {"type": "pg", "inline": "select 1", "retry": {"on": ["serialization_failure"]}},
                    {"inline": "true"},
                ],
                "matrix": {"n": ["1", "2"]},
                "gates": {"require": [{"maxReplicationLag": "16MiB"}], "wait": "1m30s"},
            }
        },
        "connections": {"pg": {"role": "primary", "conn_params": {"port": "5432"}}},
        "etcdConfig": {},
        "git": {"httpUser": "me", "httpPassword": "**********"},  # a password is never written back
        "timeout": "1h30m",
    }
    without_git = {key: value for key, value in written.items() if key != "git"}
    assert Job.from_data(without_git) == Job.from_data({key: v for key, v in data.items() if key != "git"})
    full = Job.from_data(data).to_data()
    assert full["parallel"] == 1 and full["etcdConfig"]["lockTimeout"] == "1m"


def test_a_password_never_shows_in_a_repr_but_reaches_git() -> None:
    job = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}, "git": {"httpPassword": "hunter2"}})
    assert job.git is not None and job.git.http_password is not None
    assert "hunter2" not in repr(job) and "hunter2" not in str(job.git.http_password)
    assert job.git.http_password.get_secret_value() == "hunter2"


def test_an_annotated_default_is_validated_once_per_instance_not_shared() -> None:
    first = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}})
    second = Job.from_data({"steps": {"s": {"commands": [{"inline": "x"}]}}})
    assert first.checks == [] and first.checks is not second.checks
    assert first.etcd_config is None and Job.from_data({**first.to_data(), "etcdConfig": {}}).etcd_config
    assert Retry(on=["40001"]).backoff == datetime.timedelta(seconds=1)


def test_the_job_file_schema_describes_every_key_as_files_write_them() -> None:
    from pgquartz.runner.model import json_schema

    schema = json_schema()
    assert schema["additionalProperties"] is False and schema["required"] == ["steps"]
    command = schema["$defs"]["Command"]["properties"]
    assert "batchMode" in command and "batch_mode" not in command
    assert schema["properties"]["timeout"]["anyOf"][0]["pattern"].startswith("^")
    assert schema["$defs"]["GitConfig"]["properties"]["httpPassword"]["anyOf"][0]["writeOnly"] is True
