"""The job definition: every key of a PgQuartz job file, as typed, frozen data.

This is the one source of truth for what a job file may say. The loader fills
it from YAML (adding file and line to every error), the planner and engine read
it, and the operator turns its JSON Schema into the CRD's ``spec.job``. Keys and
defaults follow PgQuartz's manual; where PgQuartz's defaults are harmful they are
replaced by sane ones and the difference is documented on the field
(``parallel``, ``lockTimeout``).

Unknown keys are errors (PgQuartz silently ignores a typo such as ``depend:``;
a maintenance job that silently loses its dependencies is worse than one that
does not start).
"""

from __future__ import annotations

import datetime
import enum
import functools
import re
from typing import Annotated, Any, Self

import pydantic

from pgquartz.runner.model import durations
from pgquartz.runner.model.base import JobModel, Whole, refused
from pgquartz.runner.model.gates import Gate, Gates
from pgquartz.runner.model.retry import Retry, connection_retry

SHELL = "shell"
"""The command type that runs a body with bash; any other type names a connection."""

_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Role(enum.StrEnum):
    """The role a PostgreSQL server must have for a command to run against it."""

    PRIMARY = "primary"
    STANDBY = "standby"
    ALL = "all"


def _matrix_values(value: Any) -> Any:
    # PgQuartz's matrix values are strings; YAML writes `arg1: [1, 2]` as ints.
    if isinstance(value, dict):
        return {key: _scalar_list(items) for key, items in value.items()}
    return value


def _scalar_list(items: Any) -> Any:
    if isinstance(items, list):
        return [_scalar_text(item) for item in items]
    return items


def _scalar_text(item: Any) -> Any:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return str(item)
    return item


def _check_matrix(value: dict[str, list[str]]) -> dict[str, list[str]]:
    for name, items in value.items():
        if not _ARG_NAME.match(name):
            raise ValueError(
                f"matrix argument {name!r} must be a name of letters, digits and '_' (not starting with a"
                " digit): it becomes the environment variable PGQ_INSTANCE_"
                + name.upper()
                + " and the SQL parameter :"
                + name
            )
        if not items:
            raise ValueError(f"matrix argument {name!r} has no values, so the step would never run")
    return value


Matrix = Annotated[
    dict[str, list[str]], pydantic.BeforeValidator(_matrix_values), pydantic.AfterValidator(_check_matrix)
]
"""Argument name → values; the step runs once per combination (cartesian product)."""


def _empty_type_is_shell(value: Any) -> Any:
    return SHELL if value in (None, "") else value


class Command(JobModel):
    """One command of a step: a shell body or a query, inline or from a file."""

    name: str = ""
    type: Annotated[str, pydantic.BeforeValidator(_empty_type_is_shell)] = pydantic.Field(
        default=SHELL,
        description="'shell' (the default) runs the body with bash; any other value names a connection.",
    )
    role: Role | None = pydantic.Field(
        default=None,
        description="Run only when the connection's server has this role (overrides the connection's).",
    )
    inline: str | None = None
    file: str | None = pydantic.Field(default=None, description="A script or SQL file, relative to workdir.")
    batch_mode: bool = pydantic.Field(
        default=False,
        alias="batchMode",
        description="Split a SQL body into statements and run them one at a time.",
    )
    retry: Retry | None = pydantic.Field(
        default=None,
        description=(
            "Run the command again after the errors listed (SQL conditions in 'on', shell exit codes in"
            " 'exitCodes'); default: the connection's retry for SQL, none for shell."
        ),
    )

    @pydantic.model_validator(mode="after")
    def _one_body_and_a_fitting_retry(self) -> Self:
        self._check_command()
        return self

    def _check_command(self) -> None:
        if self.inline is not None and self.file is not None:
            raise ValueError("set either 'inline' or 'file', not both")
        if self.inline is None and self.file is None:
            raise ValueError("set 'inline' (the command itself) or 'file' (a script or SQL file)")
        if self.retry is None:
            return
        if self.is_shell and self.retry.on:
            raise ValueError("retry.on lists SQL errors, but this is a shell command: use retry.exitCodes")
        if not self.is_shell and self.retry.exit_codes:
            raise ValueError(
                "retry.exitCodes is for shell commands; an SQL command retries on SQL errors: use retry.on"
            )

    @property
    def is_shell(self) -> bool:
        return self.type == SHELL

    @functools.cached_property
    def label(self) -> str:
        """A name for reports: the command's name, or the start of its body."""
        if self.name:
            return self.name
        if self.file is not None:
            return self.file
        first_line = (self.inline or "").strip().splitlines()[:1]
        text = first_line[0] if first_line else ""
        return text if len(text) <= 60 else text[:57] + "..."


class Step(JobModel):
    """A unit of work: commands run in order (per matrix instance) until one fails."""

    commands: list[Command] = pydantic.Field(min_length=1)
    depends: list[str] = pydantic.Field(
        default_factory=list, description="Steps that must be done (or skipped) before this one."
    )
    when: list[str] = pydantic.Field(
        default_factory=list,
        description=(
            "Rules that must all hold for the step to run (Go-template or Jinja2 expressions). Steps they"
            " read become dependencies automatically."
        ),
    )
    matrix: Matrix = pydantic.Field(default_factory=dict)
    gates: Gates | None = pydantic.Field(
        default=None, description="Conditions that must hold before the step's first instance runs."
    )


class Check(Command):
    """A command run after all steps, whose exit code and output decide the run's result."""

    rc: Whole = pydantic.Field(default=0, description="The exit code the check must end with, exactly.")
    expected: str | None = pydantic.Field(
        default=None, description="Text that must appear in the check's stdout or stderr."
    )
    unexpected: str | None = pydantic.Field(
        default=None, description="Text that must not appear in the check's stdout or stderr."
    )
    matrix: Matrix = pydantic.Field(default_factory=dict)


class OnFailover(enum.StrEnum):
    """What a run does when a connection reaches another server than it first did."""

    ABORT = "abort"
    CONTINUE = "continue"


def _params_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _scalar_text(item) for key, item in value.items()}
    return value


class Connection(JobModel):
    """A PostgreSQL endpoint that commands name in their ``type``."""

    type: str = pydantic.Field(default="postgresql", description="Informational, as in PgQuartz.")
    role: Role = pydantic.Field(
        default=Role.ALL, description="The role the server must have; 'all' accepts any."
    )
    conn_params: Annotated[dict[str, str], pydantic.BeforeValidator(_params_as_text)] = pydantic.Field(
        default_factory=dict,
        description="libpq connection keywords (host, port, dbname, user, …).",
    )
    password_file: str | None = pydantic.Field(
        default=None,
        alias="passwordFile",
        description="Read the password from this file (e.g. a mounted Kubernetes Secret).",
    )
    password_env: str | None = pydantic.Field(
        default=None,
        alias="passwordEnv",
        description="Read the password from this environment variable.",
    )
    on_failover: OnFailover | None = pydantic.Field(
        default=None,
        alias="onFailover",
        description=(
            "When a session reaches another cluster, a later timeline or another role than the run's first"
            " one did: abort stops the run (exit 6), continue goes on with a warning. Default: abort for"
            " role primary or standby, continue for all."
        ),
    )
    retry: Annotated[Retry | None, pydantic.AfterValidator(connection_retry)] = pydantic.Field(
        default=None,
        description="The retry of every SQL command on this connection that has none of its own (only 'on').",
    )

    @property
    def failover_policy(self) -> OnFailover:
        if self.on_failover is not None:
            return self.on_failover
        return OnFailover.CONTINUE if self.role is Role.ALL else OnFailover.ABORT

    @pydantic.model_validator(mode="after")
    def _one_password_source(self) -> Self:
        sources = [
            key
            for key, present in (
                ("conn_params.password", "password" in self.conn_params),
                ("passwordFile", self.password_file is not None),
                ("passwordEnv", self.password_env is not None),
            )
            if present
        ]
        if len(sources) > 1:
            raise ValueError(f"give the password one way, not {' and '.join(sources)}")
        return self


def _positive_ttl(value: datetime.timedelta) -> datetime.timedelta:
    if value.total_seconds() < 1:
        raise ValueError("lockTimeout must be at least 1s (it is the lease's TTL)")
    return value


def _budget_key(value: str | None) -> str | None:
    if value is not None and (not value.strip("/") or "//" in value or value != value.strip("/ ")):
        raise ValueError("a budget key is a name (may hold single '/', not at its ends, and no '//')")
    return value


class BudgetConfig(JobModel):
    """At most ``slots`` runs at once on one database cluster, across every job that names the budget."""

    slots: Whole = pydantic.Field(ge=1, le=1000, description="How many runs may hold a slot at once.")
    key: Annotated[str | None, pydantic.AfterValidator(_budget_key)] = pydantic.Field(
        default=None,
        max_length=200,
        description=(
            "Jobs that give the same key share a budget. Default: the database cluster's own identity"
            " (the system_identifier of the job's first connection), so jobs reaching one cluster through"
            " any name share it."
        ),
    )
    scope: Annotated[str | None, pydantic.AfterValidator(_budget_key)] = pydantic.Field(
        default=None,
        max_length=200,
        description=(
            "Budgets of different scopes never share slots, whatever their keys (the operator puts a"
            " PgQuartzJob's namespace here, so tenants cannot take each other's slots)."
        ),
    )

    def etcd_key(self, cluster: str | None) -> str:
        """Where the budget lives: its scope, then its key or ``cluster-<system_identifier>``."""
        key = self.key if self.key is not None else f"cluster-{cluster}"
        return f"{self.scope}/{key}" if self.scope else key


class EtcdConfig(JobModel):
    """The etcd lock that serialises runs of one job across nodes or pods."""

    endpoints: list[str] = pydantic.Field(default_factory=lambda: ["localhost:2379"], min_length=1)
    lock_key: str | None = pydantic.Field(
        default=None, alias="lockKey", description="Defaults to the job name (the job file's base name)."
    )
    lock_timeout: Annotated[durations.Duration, pydantic.AfterValidator(_positive_ttl)] = pydantic.Field(
        default=durations.Duration(minutes=1),
        alias="lockTimeout",
        description=(
            "The lease TTL: how long a crashed holder keeps the lock. PgQuartz defaults to 100h; pgquartz"
            " to 1m."
        ),
    )

    username: str | None = pydantic.Field(default=None, description="etcd user (with a password).")
    password_file: str | None = pydantic.Field(
        default=None, alias="passwordFile", description="Read the etcd user's password from this file."
    )
    password_env: str | None = pydantic.Field(
        default=None, alias="passwordEnv", description="Read the etcd user's password from this variable."
    )
    ca_file: str | None = pydantic.Field(
        default=None, alias="caFile", description="CA bundle to verify etcd's TLS certificate (enables TLS)."
    )
    cert_file: str | None = pydantic.Field(
        default=None, alias="certFile", description="Client certificate for TLS client authentication."
    )
    key_file: str | None = pydantic.Field(
        default=None, alias="keyFile", description="Private key of the client certificate."
    )
    budget: BudgetConfig | None = pydantic.Field(
        default=None,
        description=(
            "Once the lock is held and before the first step, also take a slot of this budget (and hold it"
            " with the lock); PGQ_BUDGET_SLOT tells the commands which."
        ),
    )

    @pydantic.model_validator(mode="after")
    def _credentials_that_go_together(self) -> Self:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give the etcd password one way: passwordFile or passwordEnv")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("an etcd password needs a username")
        if self.username and not (self.password_file or self.password_env):
            raise ValueError("an etcd username needs passwordFile or passwordEnv")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("certFile and keyFile go together")
        return self


class GitConfig(JobModel):
    """Update the job's directory from its git remote before running, as PgQuartz does."""

    dir: str | None = pydantic.Field(
        default=None, description="The repository's directory; defaults to the job file's directory."
    )
    remote: str = "origin"
    revision: str | None = pydantic.Field(
        default=None, description="A branch, tag or commit to run; defaults to the current branch."
    )
    rsa_path: str | None = pydantic.Field(default=None, alias="rsaPath")
    http_user: str | None = pydantic.Field(default=None, alias="httpUser")
    http_password: pydantic.SecretStr | None = pydantic.Field(
        default=None, alias="httpPassword", description="Never shown: a mask in reprs and written-back files."
    )
    disable: bool = False


def pulls_from_git(git: GitConfig | None) -> bool:
    """Whether a job with this ``git`` section updates its directory before running (the default)."""
    return git is None or not git.disable


def _no_connection_named_shell(value: dict[str, Connection]) -> dict[str, Connection]:
    if SHELL in value:
        raise ValueError(
            f"a connection may not be called {SHELL!r}: commands of type {SHELL!r} run in bash,"
            " so its SQL would never run; rename it"
        )
    return value


def _positive_timeout(value: datetime.timedelta | None) -> datetime.timedelta | None:
    if value is not None and value.total_seconds() <= 0:
        raise ValueError("timeout must be positive (leave it out for no timeout)")
    return value


class Job(JobModel):
    """A PgQuartz job: steps, then checks, optionally under an etcd lock."""

    steps: dict[str, Step] = pydantic.Field(min_length=1)
    checks: list[Check] = pydantic.Field(default_factory=list)
    connections: Annotated[dict[str, Connection], pydantic.AfterValidator(_no_connection_named_shell)] = (
        pydantic.Field(default_factory=dict)
    )
    etcd_config: EtcdConfig | None = pydantic.Field(default=None, alias="etcdConfig")
    git: GitConfig | None = None
    parallel: Whole = pydantic.Field(
        default=1,
        ge=1,
        description=(
            "How many instances run at once. Defaults to 1 (PgQuartz's 0 silently runs nothing; pgquartz"
            " refuses it)."
        ),
    )
    timeout: Annotated[durations.Duration | None, pydantic.AfterValidator(_positive_timeout)] = (
        pydantic.Field(
            default=None,
            description="Ends the whole run (lock wait, steps and checks) with an error; default: none.",
        )
    )
    workdir: str | None = pydantic.Field(
        default=None, description="Where scripts are found and run; defaults to the job file's directory."
    )
    log_file: str | None = pydantic.Field(
        default=None,
        alias="logFile",
        description="Also write the log here; a directory gets one dated file per run of the job.",
    )
    debug: bool = False
    run_on_role_error: bool = pydantic.Field(
        default=False,
        alias="runOnRoleError",
        description="Skip commands against a connection with the wrong role instead of refusing to run.",
    )
    gates: Gates | None = pydantic.Field(
        default=None,
        description="Conditions that must hold, once the lock is held, before the first step runs.",
    )

    @pydantic.model_validator(mode="after")
    def _budget_has_a_cluster(self) -> Self:
        budget = self.etcd_config.budget if self.etcd_config is not None else None
        if budget is not None and budget.key is None and not self.connections:
            message = (
                "a budget without a key is keyed by the database cluster of the job's first connection,"
                " and this job has none: give the budget a key"
            )
            raise refused(type(self), [(("etcdConfig", "budget"), message)])
        return self

    def budget_connection(self) -> str | None:
        """The connection whose cluster keys the budget (None: no budget, or one with its own key)."""
        budget = self.etcd_config.budget if self.etcd_config is not None else None
        if budget is None or budget.key is not None:
            return None
        return next(iter(self.connections))

    def located_commands(self) -> list[tuple[tuple[str | int, ...], Command]]:
        """Every command of every step, then every check, with its key path in the job file."""
        located: list[tuple[tuple[str | int, ...], Command]] = [
            (("steps", name, "commands", index), command)
            for name, step in self.steps.items()
            for index, command in enumerate(step.commands)
        ]
        located += [(("checks", index), check) for index, check in enumerate(self.checks)]
        located += [(path, gate_check(gate)) for path, gate in self.located_gates() if gate.kind == "custom"]
        return located

    def located_gates(self) -> list[tuple[tuple[str | int, ...], Gate]]:
        """Every gate, the job's first, with its key path in the job file."""
        located: list[tuple[tuple[str | int, ...], Gate]] = []
        if self.gates is not None:
            located += [(("gates", "require", i), gate) for i, gate in enumerate(self.gates.require)]
        for name, step in self.steps.items():
            if step.gates is not None:
                located += [
                    (("steps", name, "gates", "require", i), gate)
                    for i, gate in enumerate(step.gates.require)
                ]
        return located

    def gate_connection(self, gate: Gate) -> str:
        """The connection a built-in gate reads: its own, or the job's only one."""
        return gate.connection or next(iter(self.connections))

    def retry_of(self, command: Command) -> Retry | None:
        """The retry that applies to a command: its own, else its connection's (SQL only)."""
        if command.retry is not None or command.is_shell:
            return command.retry
        connection = self.connections.get(command.type)
        return connection.retry if connection is not None else None


def gate_check(gate: Gate) -> Check:
    """A custom gate's command, as the check it is evaluated like."""
    return Check.from_data(gate.check_fields())


def json_schema() -> dict[str, Any]:
    """The job file's JSON Schema (keys as written in job files)."""
    schema = Job.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "PgQuartz job"
    return schema
