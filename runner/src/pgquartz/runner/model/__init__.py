"""The job model: what a job file says, what exit codes mean, what commands produce.

The lowest layer of the runner, and the only one the operator imports.
"""

from pgquartz.runner.model.exitcodes import ExitCode
from pgquartz.runner.model.job import (
    SHELL,
    Check,
    Command,
    Connection,
    EtcdConfig,
    GitConfig,
    Job,
    Role,
    Step,
    json_schema,
)

__all__ = [
    "SHELL",
    "Check",
    "Command",
    "Connection",
    "EtcdConfig",
    "ExitCode",
    "GitConfig",
    "Job",
    "Role",
    "Step",
    "json_schema",
]
