import datetime

import pytest

from pgquartz.runner.model import ExitCode, Job, Role, json_schema
from pgquartz.runner.model.base import ModelError


def minimal(**extra: object) -> dict[str, object]:
    return {"steps": {"s": {"commands": [{"inline": "true"}]}}, **extra}


def test_pgquartz_defaults_with_sane_replacements() -> None:
    job = Job.from_data(minimal())
    assert job.parallel == 1  # PgQuartz's 0 runs nothing
    assert job.timeout is None
    assert job.checks == []
    assert job.etcd_config is None
    assert job.run_on_role_error is False
    command = job.steps["s"].commands[0]
    assert command.type == "shell" and command.is_shell
    assert command.batch_mode is False


def test_every_pgquartz_key_is_accepted() -> None:
    job = Job.from_data(
        {
            "debug": True,
            "git": {
                "remote": "origin",
                "rsaPath": "~/.ssh/id_rsa",
                "httpUser": "me",
                "httpPassword": "secret",
                "disable": False,
                "dir": ".",
                "revision": "main",
            },
            "logFile": "/var/log/pgquartz/",
            "parallel": 2,
            "runOnRoleError": True,
            "timeout": "1h",
            "workdir": "/etc/pgquartz/jobs/job1/",
            "etcdConfig": {"endpoints": ["localhost:2379"], "lockKey": "awesomeJob1", "lockTimeout": "1m"},
            "connections": {
                "pg": {"type": "postgresql", "role": "standby", "conn_params": {"host": "/tmp", "port": 5432}}
            },
            "steps": {
                "s": {
                    "commands": [
                        {
                            "name": "n",
                            "type": "pg",
                            "role": "primary",
                            "inline": "select 1",
                            "batchMode": True,
                        }
                    ],
                    "depends": [],
                    "when": [],
                    "matrix": {"a": ["1"]},
                }
            },
            "checks": [
                {
                    "name": "c",
                    "type": "shell",
                    "inline": "true",
                    "rc": 1,
                    "expected": "x",
                    "unexpected": "y",
                    "matrix": {"b": ["2"]},
                }
            ],
        }
    )
    assert job.timeout == datetime.timedelta(hours=1)
    assert job.etcd_config is not None and job.etcd_config.lock_key == "awesomeJob1"
    assert job.connections["pg"].role is Role.STANDBY
    assert job.connections["pg"].conn_params["port"] == "5432"
    assert job.git is not None and job.git.http_password is not None
    assert "secret" not in repr(job.git)  # a SecretStr never prints


def test_parallel_zero_is_refused() -> None:
    with pytest.raises(ModelError, match="greater than or equal to 1"):
        Job.from_data(minimal(parallel=0))


def test_matrix_scalars_become_strings() -> None:
    job = Job.from_data({"steps": {"s": {"commands": [{"inline": "true"}], "matrix": {"n": [1, 2.5, True]}}}})
    assert job.steps["s"].matrix == {"n": ["1", "2.5", "true"]}


@pytest.mark.parametrize("body", [{}, {"inline": "a", "file": "b"}])
def test_a_command_needs_exactly_one_body(body: dict[str, str]) -> None:
    with pytest.raises(ModelError):
        Job.from_data({"steps": {"s": {"commands": [body]}}})


def test_empty_type_means_shell() -> None:
    job = Job.from_data({"steps": {"s": {"commands": [{"type": "", "inline": "true"}]}}})
    assert job.steps["s"].commands[0].is_shell


def test_default_lock_ttl_is_a_minute_not_pgquartz_100h() -> None:
    job = Job.from_data(minimal(etcdConfig={}))
    assert job.etcd_config is not None
    assert job.etcd_config.lock_timeout == datetime.timedelta(minutes=1)
    assert job.etcd_config.endpoints == ["localhost:2379"]


def test_json_schema_uses_file_keys_and_forbids_unknown_ones() -> None:
    schema = json_schema()
    assert {"steps", "etcdConfig", "runOnRoleError", "logFile"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert schema["properties"]["timeout"]["anyOf"][0]["type"] == "string"


def test_exit_codes_are_the_documented_contract() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 7, 130, 143]
    assert not ExitCode.INVALID_JOB.retriable
    assert not ExitCode.ROLE_MISMATCH.retriable
    assert ExitCode.LOCK_NOT_ACQUIRED.retriable
    assert ExitCode.FAILOVER.retriable  # a failover stopped the run: the next pod meets the new primary
    assert ExitCode.GATE_FAILED.retriable
