"""The PgQuartzJob resource (``pgquartz.io/v1alpha1``): what users write, as typed data.

``spec.job`` is a PgQuartz job body built from the runner's own model (steps,
checks, parallel, timeout, debug, runOnRoleError), so the CRD and job files can
never disagree. What a job file says about its environment is replaced by
Kubernetes-native fields: ``connections`` take libpq parameters and a Secret
reference (never an inline password), ``lock`` replaces ``etcdConfig``,
``scripts`` mounts a ConfigMap for ``file:`` commands, and ``targets`` runs the
job once per database target, one at a time under the lock.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any, NamedTuple

import pydantic

from pgquartz.operator import schedule as schedules
from pgquartz.runner.model import Job, Role, durations

GROUP = "pgquartz.io"
VERSION = "v1alpha1"
KIND = "PgQuartzJob"
PLURAL = "pgquartzjobs"
SHORT_NAME = "pgqj"

JOB_BODY_KEYS = ("steps", "checks", "parallel", "timeout", "debug", "run_on_role_error")
"""The job-file keys a PgQuartzJob's ``spec.job`` takes; the others have Kubernetes-native forms."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


JobBody = pydantic.create_model(  # type: ignore[call-overload]
    "JobBody",
    __base__=_Strict,
    __doc__="A PgQuartz job body: the keys of a job file that describe the work itself.",
    **{name: (Job.model_fields[name].annotation, Job.model_fields[name]) for name in JOB_BODY_KEYS},
)


class SecretKeyRef(_Strict):
    name: str = pydantic.Field(min_length=1)
    key: str = pydantic.Field(min_length=1)


NO_INLINE_PASSWORD: dict[str, pydantic.JsonValue] = {
    "rule": "!('password' in self)",
    "message": "passwords go in a Secret: use passwordSecretRef",
}
"""The API server's CEL check (the model's own validator says the same to the operator)."""


class ConnectionSpec(_Strict):
    """A PostgreSQL endpoint; the password only ever comes from a Secret."""

    role: Role = Role.ALL
    params: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="libpq keywords: host, port, dbname, user, sslmode, …",
        json_schema_extra={"x-kubernetes-validations": [NO_INLINE_PASSWORD]},
    )
    password_secret_ref: SecretKeyRef | None = pydantic.Field(default=None, alias="passwordSecretRef")

    @pydantic.field_validator("params")
    @classmethod
    def _no_inline_password(cls, value: dict[str, str]) -> dict[str, str]:
        if "password" in value:
            raise ValueError("passwords go in a Secret: use passwordSecretRef, not params.password")
        return value


class LockSpec(_Strict):
    """The etcd lock; defaults come from the operator's configuration and the resource's name."""

    endpoints: list[str] | None = pydantic.Field(default=None, description="Default: the operator's setting.")
    key: str | None = pydantic.Field(default=None, description="Default: <namespace>/<name>.")
    ttl: durations.Duration = pydantic.Field(
        default=datetime.timedelta(minutes=1), json_schema_extra={"default": "1m"}
    )


class TargetSpec(_Strict):
    """One database target: the job runs once per target, with these connection parameters."""

    name: str = pydantic.Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    connections: dict[str, dict[str, str]] = pydantic.Field(
        default_factory=dict, description="Per connection name: libpq parameters that replace the spec's."
    )


class ConfigMapRef(_Strict):
    name: str = pydantic.Field(min_length=1)


class ScriptsSpec(_Strict):
    config_map_ref: ConfigMapRef = pydantic.Field(alias="configMapRef")


class PodTemplateSpec(_Strict):
    """The small part of the pod a user may change."""

    node_selector: dict[str, str] = pydantic.Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    service_account_name: str | None = pydantic.Field(default=None, alias="serviceAccountName")
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)


class Reference(NamedTuple):
    """An object the job's pods need that the operator does not make: a Secret key or a ConfigMap."""

    kind: str
    name: str
    key: str | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}" + (f" (key {self.key!r})" if self.key else "")


class ConcurrencyPolicy(enum.StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class PgQuartzJobSpec(_Strict):
    """``spec`` of a PgQuartzJob."""

    schedule: str = pydantic.Field(
        min_length=1,
        description='Cron syntax, e.g. "15 23 * * *", or @hourly, @daily, @every 6h, …',
        json_schema_extra={"pattern": schedules.SHAPE},
    )
    time_zone: str | None = pydantic.Field(
        default=None, alias="timeZone", description="An IANA time zone name, e.g. Europe/Amsterdam."
    )
    suspend: bool = False
    concurrency_policy: ConcurrencyPolicy = pydantic.Field(
        default=ConcurrencyPolicy.FORBID, alias="concurrencyPolicy"
    )
    starting_deadline_seconds: int | None = pydantic.Field(
        default=None, ge=0, alias="startingDeadlineSeconds"
    )
    successful_jobs_history_limit: int = pydantic.Field(default=3, ge=0, alias="successfulJobsHistoryLimit")
    failed_jobs_history_limit: int = pydantic.Field(default=1, ge=0, alias="failedJobsHistoryLimit")
    job: JobBody
    connections: dict[str, ConnectionSpec] = pydantic.Field(default_factory=dict)
    lock: LockSpec | None = None
    targets: list[TargetSpec] = pydantic.Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    scripts: ScriptsSpec | None = None
    image: str | None = None
    resources: dict[str, Any] | None = pydantic.Field(
        default=None, description="Container resources (requests, limits) for the job's pod."
    )
    pod_template: PodTemplateSpec | None = pydantic.Field(default=None, alias="podTemplate")

    @pydantic.field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        problem = schedules.schedule_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @pydantic.field_validator("time_zone")
    @classmethod
    def _valid_time_zone(cls, value: str | None) -> str | None:
        problem = None if value is None else schedules.time_zone_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @pydantic.model_validator(mode="after")
    def _targets_name_known_connections(self) -> PgQuartzJobSpec:
        names = [target.name for target in self.targets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"targets: names must be unique, repeated: {', '.join(repeated)}")
        for index, target in enumerate(self.targets):
            unknown = sorted(set(target.connections) - set(self.connections))
            if unknown:
                raise ValueError(
                    f"targets[{index}] ({target.name}): no connection named {', '.join(map(repr, unknown))}"
                    f" in spec.connections"
                )
        return self

    def references(self) -> list[Reference]:
        """The Secrets (with their keys) and ConfigMaps the pods read, in a stable order."""
        found = [
            Reference("Secret", connection.password_secret_ref.name, connection.password_secret_ref.key)
            for connection in self.connections.values()
            if connection.password_secret_ref is not None
        ]
        if self.scripts is not None:
            found.append(Reference("ConfigMap", self.scripts.config_map_ref.name))
        return sorted(set(found))
