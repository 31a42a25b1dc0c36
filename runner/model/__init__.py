"""The job model: what a job file says, what exit codes mean, what commands produce.

The lowest layer of the runner, and the only one the operator imports.
"""

import os as _os

# pydantic scans every installed distribution's entry points for plugins when the
# first model is built: about 50 ms of the runner's start-up, for plugins our models
# do not use. An explicit PYDANTIC_DISABLE_PLUGINS from the user wins.
_PLUGINS_SETTING = _os.environ.get("PYDANTIC_DISABLE_PLUGINS")
if _PLUGINS_SETTING is None:
    _os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
try:
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
finally:
    if _PLUGINS_SETTING is None:
        del _os.environ["PYDANTIC_DISABLE_PLUGINS"]

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
