"""The cluster admin's rules for what a PgQuartzJob may ask for: safe by default, each refusal named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pgquartz.operator import policy, resource, settings
from tests.operator.test_crd import VALID_SPEC


def spec(**changes: Any) -> resource.PgQuartzJobSpec:
    return resource.PgQuartzJobSpec.model_validate(copy.deepcopy(VALID_SPEC) | changes)


DEFAULT = settings.from_environment({}).defaults.policy


def test_the_defaults_allow_only_the_runner_images_repository() -> None:
    assert DEFAULT.allowed_images == ("pgquartz/runner",)
    assert DEFAULT.image_allowed("pgquartz/runner:0.2.0") and DEFAULT.image_allowed(
        "pgquartz/runner@sha256:ab"
    )
    assert not DEFAULT.image_allowed("pgquartz/runner-evil:1") and not DEFAULT.image_allowed("evil/image:1")
    assert not DEFAULT.image_allowed("pgquartz/runner.evil.example/x:1")


def test_repository_of_an_image() -> None:
    assert (
        policy.repository("registry.example:5000/pgquartz/runner:1.0")
        == "registry.example:5000/pgquartz/runner"
    )
    assert policy.repository("runner@sha256:abc") == "runner"
    assert policy.repository("pgquartz/runner") == "pgquartz/runner"


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"image": "evil/image:1"}, "spec.image: 'evil/image:1' is not an allowed image (pgquartz/runner;"),
        ({"podTemplate": {"serviceAccountName": "admin"}}, "PGQUARTZ_ALLOW_SERVICE_ACCOUNTS"),
        ({"podTemplate": {"tolerations": [{"operator": "Exists"}]}}, "PGQUARTZ_ALLOW_TOLERATIONS"),
        ({"podTemplate": {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}}, "NODE_SELECTORS"),
        (
            {"podTemplate": {"annotations": {"sidecar.istio.io/inject": "false"}}},
            "spec.podTemplate.annotations: sidecar.istio.io/inject not allowed (PGQUARTZ_DENIED_ANNOTATIONS)",
        ),
        (
            {"podTemplate": {"annotations": {"container.apparmor.security.beta.kubernetes.io/runner": "x"}}},
            "PGQUARTZ_DENIED_ANNOTATIONS",
        ),
        (
            {"lock": {"endpoints": ["etcd.evil:2379"]}},
            "spec.lock.endpoints: the operator's endpoints are used",
        ),
    ],
)
def test_what_a_shared_cluster_does_not_allow_by_default(changes: dict[str, Any], refusal: str) -> None:
    [problem] = policy.problems(spec(**changes), DEFAULT)
    assert refusal in problem


def test_each_rule_can_be_widened_by_the_admin() -> None:
    widened = settings.from_environment(
        {
            "PGQUARTZ_ALLOWED_IMAGES": "registry.example/dba/, pgquartz/runner",
            "PGQUARTZ_ALLOW_SERVICE_ACCOUNTS": "true",
            "PGQUARTZ_ALLOW_TOLERATIONS": "yes",
            "PGQUARTZ_ALLOW_NODE_SELECTORS": "1",
            "PGQUARTZ_DENIED_ANNOTATIONS": "",
            "PGQUARTZ_ALLOW_LOCK_ENDPOINTS": "true",
            "PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS": "true",
        }
    ).defaults.policy
    everything = spec(
        image="registry.example/dba/runner:1",
        podTemplate={
            "serviceAccountName": "maint",
            "tolerations": [{"key": "db", "operator": "Exists"}],
            "nodeSelector": {"disk": "ssd"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        lock={"endpoints": ["etcd.dba:2379"]},
        connections={"primary": {"cluster": {"kind": "Crunchy", "name": "hippo", "namespace": "dbs"}}},
    )
    assert policy.problems(everything, widened, namespace="db") == []


def test_annotations_of_ones_own_are_fine() -> None:
    assert policy.problems(spec(podTemplate={"annotations": {"example.com/team": "dba"}}), DEFAULT) == []


def test_lock_keys_stay_in_the_resources_namespace() -> None:
    assert policy.lock_key(None, namespace="db", name="nightly", policy=DEFAULT) == "db/nightly"
    assert policy.lock_key("db/shared", namespace="db", name="nightly", policy=DEFAULT) == "db/shared"
    assert policy.lock_key("payments/nightly-vacuum", namespace="db", name="x", policy=DEFAULT) == (
        "db/payments/nightly-vacuum"
    )
    allowed = policy.Policy(allow_cross_namespace_locks=True)
    assert policy.lock_key("payments/nightly-vacuum", namespace="db", name="x", policy=allowed) == (
        "payments/nightly-vacuum"
    )


def test_bad_flags_are_refused() -> None:
    with pytest.raises(settings.SettingsError, match="PGQUARTZ_ALLOW_TOLERATIONS must be true or false"):
        settings.from_environment({"PGQUARTZ_ALLOW_TOLERATIONS": "maybe"})
    with pytest.raises(settings.SettingsError, match="PGQUARTZ_MAX_INSTANCES must be a positive number"):
        settings.from_environment({"PGQUARTZ_MAX_INSTANCES": "0"})


def test_a_cluster_of_another_namespace_needs_the_admins_allowance() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"] = {
        "primary": {"cluster": {"kind": "CloudNativePG", "name": "main", "namespace": "databases"}}
    }
    parsed = resource.PgQuartzJobSpec.model_validate(spec)
    [problem] = policy.problems(parsed, policy.Policy(), namespace="team-a")
    assert problem == (
        "spec.connections.primary.cluster.namespace: 'databases' is not this resource's namespace"
        " (PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS)"
    )
    assert policy.problems(parsed, policy.Policy(), namespace="databases") == []
    assert (
        policy.problems(parsed, policy.Policy(allow_cross_namespace_clusters=True), namespace="team-a") == []
    )
    # its Service in its namespace, and no default Secret: a pod reads its own namespace's only
    connection = parsed.connections["primary"]
    assert connection.address("team-a")["host"] == "main-r.databases.svc"
    assert connection.password_secret() is None and connection.ca_secret() is None
