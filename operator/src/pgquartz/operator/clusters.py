"""What each PostgreSQL operator makes for a cluster, by its published conventions.

A PgQuartzJob's connection may name a database cluster run by CloudNativePG,
Zalando's postgres-operator or Crunchy PGO instead of hosts: the operator then
fills in the host (the cluster's Service for the connection's role), the port
and, unless the connection names its own, the Secret the cluster's operator made
for the user. Each convention below is what that operator's documentation
states, and where:

- **CloudNativePG** (``postgresql.cnpg.io/v1`` ``Cluster``; cloudnative-pg.io, "Service
  management" and "Connecting from an application"): Services ``<name>-rw`` (the primary),
  ``<name>-ro`` (the replicas), ``<name>-r`` (any instance); Secrets ``<name>-app`` for the
  application owner (``app`` unless ``bootstrap.initdb.owner`` says otherwise) and
  ``<name>-superuser`` for ``postgres`` when superuser access is enabled, both
  ``kubernetes.io/basic-auth`` (``username``, ``password``); the server CA in ``<name>-ca``
  (``ca.crt``, "Certificates"); instance pods labelled ``cnpg.io/cluster`` and
  ``cnpg.io/instanceRole`` (``primary``/``replica``).
- **Zalando postgres-operator** (``acid.zalan.do/v1`` ``postgresql``; opensource.zalando.com
  postgres-operator, "User guide" and the ``secret_name_template`` default): Services ``<name>``
  (the master) and ``<name>-repl`` (the replicas); a Secret per user
  ``<user>.<name>.credentials.postgresql.acid.zalan.do`` (underscores of the user name as
  dashes), keys ``username`` and ``password``; pods labelled ``cluster-name`` and ``spilo-role``
  (``master``/``replica``); no CA Secret of its own.
- **Crunchy PGO** v5 (``postgres-operator.crunchydata.com/v1beta1`` ``PostgresCluster``;
  access.crunchydata.com, "User management" and "Connect"): Services ``<name>-primary`` and
  ``<name>-replicas``; a Secret per user ``<name>-pguser-<user>`` (the default user is named after
  the cluster) with ``user``, ``password``, ``host``, ``port``, ``dbname``; pods labelled
  ``postgres-operator.crunchydata.com/cluster`` and ``…/role`` (``master``/``replica``).

All three listen on 5432. For ``sslmode: verify-ca`` or ``verify-full`` the server's CA comes
from CloudNativePG's ``<name>-ca`` or Crunchy's ``<name>-cluster-cert`` (key ``ca.crt`` in both;
PGO's "Connect to a Postgres Cluster", TLS); Zalando's is the user's own (``spec.tls.caSecretName``),
given with ``sslrootcert`` and a mounted Secret as for any connection.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

PORT = "5432"


class ClusterKind(enum.StrEnum):
    """The PostgreSQL operator that runs a cluster."""

    CLOUDNATIVEPG = "CloudNativePG"
    ZALANDO = "Zalando"
    CRUNCHY = "Crunchy"


KINDS = frozenset(kind.value for kind in ClusterKind)
"""The kinds a connection's ``cluster`` may name (a :class:`~pgquartz.operator.resource.Reference`'s kind)."""


class Convention(NamedTuple):
    """Where an operator keeps a cluster and what it makes for it."""

    path: str
    """Its collection's API path, with ``{namespace}``."""
    primary_service: str
    replicas_service: str
    any_service: str | None
    cluster_label: str
    role_label: str
    primary_role: str
    replica_role: str
    default_user: str | None
    """The user a connection without one connects as (None: the cluster's own name, Crunchy's)."""


CONVENTIONS = {
    ClusterKind.CLOUDNATIVEPG: Convention(
        path="/apis/postgresql.cnpg.io/v1/namespaces/{namespace}/clusters",
        primary_service="{name}-rw",
        replicas_service="{name}-ro",
        any_service="{name}-r",
        cluster_label="cnpg.io/cluster",
        role_label="cnpg.io/instanceRole",
        primary_role="primary",
        replica_role="replica",
        default_user="app",
    ),
    ClusterKind.ZALANDO: Convention(
        path="/apis/acid.zalan.do/v1/namespaces/{namespace}/postgresqls",
        primary_service="{name}",
        replicas_service="{name}-repl",
        any_service=None,
        cluster_label="cluster-name",
        role_label="spilo-role",
        primary_role="master",
        replica_role="replica",
        default_user="postgres",
    ),
    ClusterKind.CRUNCHY: Convention(
        path="/apis/postgres-operator.crunchydata.com/v1beta1/namespaces/{namespace}/postgresclusters",
        primary_service="{name}-primary",
        replicas_service="{name}-replicas",
        any_service=None,
        cluster_label="postgres-operator.crunchydata.com/cluster",
        role_label="postgres-operator.crunchydata.com/role",
        primary_role="master",
        replica_role="replica",
        default_user=None,
    ),
}


def service(kind: ClusterKind, cluster: str, role: str) -> str:
    """The Service a connection with ``role`` (primary, standby, all) reaches the cluster through."""
    convention = CONVENTIONS[kind]
    if role == "standby":
        template = convention.replicas_service
    elif role == "all" and convention.any_service is not None:
        template = convention.any_service
    else:
        template = convention.primary_service  # "all" where there is no any-instance Service
    return template.format(name=cluster)


def user_of(kind: ClusterKind, cluster: str, user: str | None) -> str:
    """The user a connection connects as: its own, else the operator's default one."""
    return user or CONVENTIONS[kind].default_user or cluster


def password_secret(kind: ClusterKind, cluster: str, user: str) -> tuple[str, str] | None:
    """The Secret and key holding ``user``'s password, as the cluster's operator makes it (None: it
    makes none for that user: the connection names its own)."""
    if kind is ClusterKind.CLOUDNATIVEPG:
        name = {"app": f"{cluster}-app", "postgres": f"{cluster}-superuser"}.get(user)
    elif kind is ClusterKind.ZALANDO:
        name = f"{user.replace('_', '-')}.{cluster}.credentials.postgresql.acid.zalan.do"
    else:
        name = f"{cluster}-pguser-{user}"
    return (name, "password") if name is not None else None


class Instance(NamedTuple):
    """One instance pod of a cluster: its name (a target's) and the address it answers on."""

    name: str
    host: str


def selector(kind: ClusterKind, cluster: str, instances: str) -> str:
    """The label selector of a cluster's instance pods: all, the primary, or the replicas."""
    convention = CONVENTIONS[kind]
    found = f"{convention.cluster_label}={cluster}"
    if instances == "primary":
        found += f",{convention.role_label}={convention.primary_role}"
    elif instances == "replicas":
        found += f",{convention.role_label}={convention.replica_role}"
    return found


def instances_of(pods: list[dict[str, Any]]) -> list[Instance]:
    """The pods that serve now (an address, not being deleted), by name: a stable order of targets."""
    found = [
        Instance(pod["metadata"]["name"], (pod.get("status") or {})["podIP"])
        for pod in pods
        if (pod.get("status") or {}).get("podIP") and not pod["metadata"].get("deletionTimestamp")
    ]
    return sorted(found)


VERIFYING = ("verify-ca", "verify-full")
"""The ``sslmode`` values that need the server's CA."""


def ca_secret(kind: ClusterKind, cluster: str) -> str | None:
    """The Secret holding the cluster's server CA as ``ca.crt`` (None: its operator keeps none)."""
    if kind is ClusterKind.CLOUDNATIVEPG:
        return f"{cluster}-ca"
    if kind is ClusterKind.CRUNCHY:
        return f"{cluster}-cluster-cert"
    return None
