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

import enum
import re
from typing import Annotated, Any, NamedTuple

import pydantic

from pgquartz.operator import clusters, names
from pgquartz.operator import schedule as schedules
from pgquartz.runner.model import Job, Role, durations
from pgquartz.runner.model.base import JobModel
from pgquartz.runner.model.job import OnFailover
from pgquartz.runner.model.retry import Retry, connection_retry

GROUP = "pgquartz.io"
VERSION = "v1alpha1"
KIND = "PgQuartzJob"
PLURAL = "pgquartzjobs"
SHORT_NAME = "pgqj"

JOB_BODY_KEYS = ("steps", "checks", "parallel", "timeout", "debug", "run_on_role_error", "gates")
"""The job-file keys a PgQuartzJob's ``spec.job`` takes; the others have Kubernetes-native forms."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


JobBody: type[JobModel] = pydantic.create_model(
    "JobBody",
    __base__=JobModel,
    __doc__="A PgQuartz job body: the keys of a job file that describe the work itself.",
    **{name: (Job.model_fields[name].annotation, Job.model_fields[name]) for name in JOB_BODY_KEYS},  # type: ignore[call-overload]
)
"""The job model's own fields (checks and all), so that ``spec.job`` and a job file read alike."""


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""Names of Kubernetes objects (Secrets, ConfigMaps, service accounts)."""
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
"""Keys of Secrets and ConfigMaps."""
QUANTITY = (
    r"^(\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"  # (no sign: never negative)
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""A resource quantity (``500m``, ``1Gi``), never negative."""
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"  # an optional DNS prefix
    r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$"
)
"""Label and annotation keys: an optional DNS prefix, a name of at most 63 characters."""
CONNECTION_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
SHELL = "shell"
"""Connection names become environment variable names (``PGQ_PASSWORD_<NAME>``): ASCII only."""

CONNECTION_NAMES: dict[str, pydantic.JsonValue] = {
    "rule": f"self.all(k, k.matches(r'{CONNECTION_NAME}') && k != '{SHELL}')",
    "message": "connection names are ASCII identifiers (letters, digits, - and _), not 'shell'",
}

ObjectName = Annotated[str, pydantic.Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LabelName = Annotated[str, pydantic.Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
"""Names of namespaces, of database clusters and of targets (one DNS label)."""


class SecretKeyRef(_Strict):
    name: ObjectName
    key: str = pydantic.Field(min_length=1, max_length=253, pattern=CONFIG_KEY)


_PASSWORD_KEYS = ("password", "sslpassword")
_CONNINFO_PASSWORD = r"(?i)(^|\s)(ssl)?password\s*="
_URI_PASSWORD = r"(?i)^postgres(ql)?://[^/?#@]*:[^/?#@]*@"
_QUERY_PASSWORD = r"(?i)[?&](ssl)?password="

NO_INLINE_PASSWORD: dict[str, pydantic.JsonValue] = {
    "rule": (
        "!('password' in self) && !('sslpassword' in self) && self.all(k,"
        f" !self[k].matches(r'{_CONNINFO_PASSWORD}') && !self[k].matches(r'{_URI_PASSWORD}')"
        f" && !self[k].matches(r'{_QUERY_PASSWORD}'))"
    ),
    "message": "passwords go in a Secret: use passwordSecretRef (no password, sslpassword, conninfo"
    " string or URI with a password in params)",
}
"""The API server's CEL check (the model's own validator says the same to the operator)."""


def inline_password(params: dict[str, str]) -> str | None:
    """The parameter that carries a password in ``params`` (libpq would read one from a conninfo
    string or a URI in ``dbname``, ``host`` …), or None."""
    for key, value in params.items():
        if key.lower() in _PASSWORD_KEYS:
            return key
        if any(re.search(pattern, value) for pattern in (_CONNINFO_PASSWORD, _URI_PASSWORD, _QUERY_PASSWORD)):
            return key
    return None


def _refuse_inline_password(params: dict[str, str]) -> dict[str, str]:
    key = inline_password(params)
    if key is not None:
        raise ValueError(f"params.{key} carries a password: passwords go in a Secret, use passwordSecretRef")
    return params


Params = Annotated[
    dict[str, str],
    pydantic.Field(
        description="libpq keywords: host, port, dbname, user, sslmode, …",
        json_schema_extra={"x-kubernetes-validations": [NO_INLINE_PASSWORD]},
    ),
]


class ClusterRef(_Strict):
    """A database cluster that CloudNativePG, Zalando's postgres-operator or Crunchy PGO runs."""

    kind: clusters.ClusterKind
    name: LabelName
    namespace: LabelName | None = pydantic.Field(
        default=None,
        description=(
            "Default: the resource's. A cluster named with a namespace gives no default Secret or CA (a"
            " pod reads Secrets of its own namespace only): give passwordSecretRef. Another namespace"
            " than the resource's needs the operator's PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS."
        ),
    )

    def describe(self) -> str:
        where = f" (namespace {self.namespace})" if self.namespace else ""
        return f"{self.kind.value} cluster {self.name!r}{where}"

    def namespace_or(self, namespace: str) -> str:
        return self.namespace or namespace


CLUSTER_PARAMS = ("host", "hostaddr", "port")
"""What a cluster's connection takes from the cluster, never from ``params``."""


class ConnectionSpec(_Strict):
    """A PostgreSQL endpoint; the password only ever comes from a Secret."""

    role: Role = Role.ALL
    cluster: ClusterRef | None = pydantic.Field(
        default=None,
        description=(
            "Reach this cluster: host and port are its Service for the role (CloudNativePG <name>-rw,"
            " -ro, -r; Zalando <name>, <name>-repl; Crunchy <name>-primary, <name>-replicas), and the"
            " password, unless passwordSecretRef says otherwise, the Secret its operator made for the user."
        ),
    )
    params: Params = pydantic.Field(default_factory=dict)
    password_secret_ref: SecretKeyRef | None = pydantic.Field(default=None, alias="passwordSecretRef")
    on_failover: OnFailover | None = pydantic.Field(
        default=None,
        alias="onFailover",
        description=(
            "abort (the default for role primary or standby): a run that reaches another server mid-run"
            " stops with exit code 6 and its Job tries again; continue (the default for all) goes on."
        ),
    )
    retry: Retry | None = pydantic.Field(
        default=None, description="The retry of this connection's SQL commands that have none ('on' only)."
    )

    @pydantic.field_validator("retry")
    @classmethod
    def _sql_retry(cls, value: Retry | None) -> Retry | None:
        return connection_retry(value)

    @pydantic.field_validator("params")
    @classmethod
    def _no_inline_password(cls, value: dict[str, str]) -> dict[str, str]:
        return _refuse_inline_password(value)

    @pydantic.model_validator(mode="after")
    def _the_clusters_own_address(self) -> ConnectionSpec:
        given = [key for key in CLUSTER_PARAMS if key in self.params]
        if self.cluster is not None and given:
            raise ValueError(f"params: {', '.join(given)} are the cluster's: leave them out")
        return self

    def password_secret(self) -> SecretKeyRef | None:
        """Where the password is: the connection's own Secret, else the one its cluster's operator
        makes for the user (None: no password from a Secret)."""
        if self.password_secret_ref is not None or self.cluster is None or self.cluster.namespace:
            return self.password_secret_ref
        user = clusters.user_of(self.cluster.kind, self.cluster.name, self.params.get("user"))
        found = clusters.password_secret(self.cluster.kind, self.cluster.name, user)
        return SecretKeyRef(name=found[0], key=found[1]) if found is not None else None

    def ca_secret(self) -> str | None:
        """The Secret with the cluster's CA (``ca.crt``) when the connection verifies the server and
        names no ``sslrootcert`` of its own."""
        if (
            self.cluster is None
            or self.cluster.namespace
            or self.params.get("sslmode") not in clusters.VERIFYING
        ):
            return None
        if "sslrootcert" in self.params:
            return None
        return clusters.ca_secret(self.cluster.kind, self.cluster.name)

    def address(self, namespace: str) -> dict[str, str]:
        """The libpq keywords a cluster gives the connection: host, port and user (none without one)."""
        if self.cluster is None:
            return {}
        kind, name = self.cluster.kind, self.cluster.name
        service = clusters.service(kind, name, self.role.value)
        return {
            "host": f"{service}.{self.cluster.namespace_or(namespace)}.svc",
            "port": clusters.PORT,
            "user": clusters.user_of(kind, name, self.params.get("user")),
        }


class BudgetSpec(_Strict):
    """At most ``slots`` runs at once on one database cluster, across the PgQuartzJobs that share it."""

    slots: int = pydantic.Field(ge=1, le=1000, description="How many runs may hold a slot at once.")
    key: str | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9]([-._A-Za-z0-9]*[A-Za-z0-9])?$",
        description=(
            "Resources that give the same key share a budget. Default: the database cluster's identity"
            " (of the first connection), so every job on that cluster shares it. Within the resource's"
            " namespace unless the operator allows cross-namespace locks."
        ),
    )


class LockSpec(_Strict):
    """The etcd lock; defaults come from the operator's configuration and the resource's name."""

    endpoints: list[str] | None = pydantic.Field(default=None, description="Default: the operator's setting.")
    key: str | None = pydantic.Field(default=None, description="Default: <namespace>/<name>.")
    ttl: durations.Duration = pydantic.Field(default=durations.Duration(minutes=1))
    budget: BudgetSpec | None = pydantic.Field(
        default=None,
        description="Also take a slot of this budget once the lock is held (PGQ_BUDGET_SLOT tells which).",
    )


class TargetSpec(_Strict):
    """One database target: the job runs once per target, with these connection parameters."""

    name: LabelName
    connections: dict[str, Params] = pydantic.Field(
        default_factory=dict, description="Per connection name: libpq parameters that replace the spec's."
    )

    @pydantic.field_validator("connections")
    @classmethod
    def _no_inline_password(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for params in value.values():
            _refuse_inline_password(params)
        return value


class Instances(enum.StrEnum):
    ALL = "all"
    PRIMARY = "primary"
    REPLICAS = "replicas"


class TargetsFromSpec(_Strict):
    """One target per instance pod of a cluster, in the order of their names, as the cluster is at
    each rendering (the operator watches its pods): every instance in turn under the lock."""

    cluster: ClusterRef
    instances: Instances = Instances.ALL


class ConfigMapRef(_Strict):
    name: ObjectName


class ScriptsSpec(_Strict):
    config_map_ref: ConfigMapRef = pydantic.Field(alias="configMapRef")


def _quantity(value: str | int) -> str | int:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a quantity must not be negative, not {value}")
        return value
    if not re.match(QUANTITY, value):
        raise ValueError(f"{value!r} is not a quantity (e.g. 500m, 2, 1Gi)")
    return value


Quantity = Annotated[
    str | int,
    pydantic.Field(union_mode="left_to_right", json_schema_extra={"pattern": QUANTITY}),
    pydantic.AfterValidator(_quantity),
]


RESOURCE_NAME = (
    r"^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+"  # or an extended resource, example.com/name
    r"|[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)


def _keys(pattern: str, what: str) -> pydantic.AfterValidator:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        wrong = [key for key in value if not re.match(pattern, key)]
        if wrong:
            raise ValueError(f"{', '.join(map(repr, wrong[:3]))}: not {what}")
        return value

    return pydantic.AfterValidator(check)


def _cel_keys(pattern: str, message: str) -> dict[str, Any]:
    return {
        "x-kubernetes-validations": [{"rule": f"self.all(k, k.matches(r'{pattern}'))", "message": message}]
    }


Quantities = Annotated[
    dict[str, Quantity],
    _keys(RESOURCE_NAME, "a resource name (cpu, memory, ephemeral-storage, hugepages-*, example.com/x)"),
    pydantic.Field(json_schema_extra=_cel_keys(RESOURCE_NAME, "not a resource name")),
]


class ResourceRequirements(_Strict):
    """Container resources, as a Pod's ``resources`` (without ``claims``)."""

    requests: Quantities = pydantic.Field(default_factory=dict)
    limits: Quantities = pydantic.Field(default_factory=dict)


class TolerationOperator(enum.StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(_Strict):
    """A Pod's toleration."""

    key: str | None = pydantic.Field(default=None, max_length=316, pattern=QUALIFIED_NAME)
    operator: TolerationOperator | None = None
    value: str | None = pydantic.Field(default=None, max_length=63, pattern=LABEL_VALUE)
    effect: TaintEffect | None = None
    toleration_seconds: int | None = pydantic.Field(default=None, alias="tolerationSeconds")


LabelValue = Annotated[str, pydantic.Field(max_length=63, pattern=LABEL_VALUE)]
QUALIFIED_KEYS = _cel_keys(QUALIFIED_NAME, "keys must be label keys: [prefix/]name, at most 63 characters")


class PodTemplateSpec(_Strict):
    """The small part of the pod a user may change (and the operator's settings may forbid)."""

    node_selector: Annotated[dict[str, LabelValue], _keys(QUALIFIED_NAME, "a label key")] = pydantic.Field(
        default_factory=dict, alias="nodeSelector", json_schema_extra=QUALIFIED_KEYS
    )
    tolerations: list[Toleration] = pydantic.Field(default_factory=list)
    service_account_name: str | None = pydantic.Field(
        default=None, alias="serviceAccountName", max_length=253, pattern=DNS_SUBDOMAIN
    )
    annotations: Annotated[dict[str, str], _keys(QUALIFIED_NAME, "an annotation key")] = pydantic.Field(
        default_factory=dict, json_schema_extra=QUALIFIED_KEYS
    )


class Reference(NamedTuple):
    """An object the job's pods need that the operator does not make: a Secret key, a ConfigMap, or a
    database cluster (its kind is then the cluster's operator: CloudNativePG, Zalando, Crunchy)."""

    kind: str
    name: str
    key: str | None = None
    namespace: str | None = None
    """Where it is, when not in the resource's namespace (a cluster's only)."""

    def describe(self) -> str:
        if self.kind in clusters.KINDS:
            return f"{self.kind} cluster {self.name!r}"
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
    connections: dict[str, ConnectionSpec] = pydantic.Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-validations": [CONNECTION_NAMES]},
    )
    lock: LockSpec | None = None
    targets: list[TargetSpec] = pydantic.Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    targets_from: TargetsFromSpec | None = pydantic.Field(
        default=None,
        alias="targetsFrom",
        description=(
            "Instead of targets: one per instance pod of this cluster; the connections that name the"
            " cluster reach each pod in turn (give them role all, or the role of the instances chosen)."
        ),
    )
    scripts: ScriptsSpec | None = None
    image: str | None = pydantic.Field(default=None, max_length=1024, pattern=r"^[^\s]+$")
    resources: ResourceRequirements | None = pydantic.Field(
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

    @pydantic.field_validator("connections")
    @classmethod
    def _connection_names(cls, value: dict[str, ConnectionSpec]) -> dict[str, ConnectionSpec]:
        for name in value:
            if not re.match(CONNECTION_NAME, name) or name == "shell":
                raise ValueError(
                    f"{name[:63]!r}: connection names are ASCII identifiers (letters, digits, - and _;"
                    " they name an environment variable), and not 'shell'"
                )
        shared: dict[str, list[str]] = {}
        for name, connection in value.items():
            if connection.password_secret() is not None:
                shared.setdefault(names.password_variable(name), []).append(name)
        for variable, users in shared.items():
            if len(users) > 1:
                raise ValueError(
                    f"connections {' and '.join(map(repr, users))} would share the password variable"
                    f" {variable}: rename one"
                )
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

    @pydantic.model_validator(mode="after")
    def _targets_from_a_named_cluster(self) -> PgQuartzJobSpec:
        if self.targets_from is None:
            return self
        if self.targets:
            raise ValueError("give targets or targetsFrom, not both")
        if not self.connections_on(self.targets_from.cluster):
            raise ValueError(
                f"targetsFrom: no connection names {self.targets_from.cluster.describe()} (give one"
                " connection cluster: the same kind and name)"
            )
        return self

    def connections_on(self, cluster: ClusterRef) -> list[str]:
        """The connections that reach ``cluster``."""
        return [name for name, connection in self.connections.items() if connection.cluster == cluster]

    def with_instances(self, instances: list[clusters.Instance]) -> PgQuartzJobSpec:
        """This spec with one target per instance of its ``targetsFrom`` cluster (each connection on
        that cluster reaching the instance's own address)."""
        assert self.targets_from is not None
        on_cluster = self.connections_on(self.targets_from.cluster)
        targets = [
            TargetSpec(
                # a target's name is a DNS label; a pod's may be longer or hold dots
                name=instance.name
                if len(instance.name) <= 63 and re.match(DNS_LABEL, instance.name)
                else f"instance-{index}",
                connections={name: {"host": instance.host} for name in on_cluster},
            )
            for index, instance in enumerate(instances)
        ]
        return self.model_copy(update={"targets": targets})

    def references(self) -> list[Reference]:
        """The Secrets (with their keys) and ConfigMaps the pods read, in a stable order."""
        found = [
            Reference("Secret", secret.name, secret.key)
            for connection in self.connections.values()
            for secret in (connection.password_secret(),)
            if secret is not None
        ]
        found += [
            Reference(
                connection.cluster.kind.value, connection.cluster.name, namespace=connection.cluster.namespace
            )
            for connection in self.connections.values()
            if connection.cluster is not None
        ]
        found += [
            Reference("Secret", ca, "ca.crt")
            for connection in self.connections.values()
            for ca in (connection.ca_secret(),)
            if ca is not None
        ]
        if self.scripts is not None:
            found.append(Reference("ConfigMap", self.scripts.config_map_ref.name))
        return sorted(set(found))
