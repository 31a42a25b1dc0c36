"""Rendering a PgQuartzJob into its ConfigMap and CronJob: valid, restricted, deterministic, runnable."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pgquartz.operator import clusters, manifests, policy, validation
from tests.conftest import run_pgquartz
from tests.operator.test_crd import VALID_SPEC
from tests.support.apiserver import schemas

DEFAULTS = manifests.Defaults(image="registry.example/pgquartz/runner:1.0", etcd_endpoints=("etcd.pgq:2379",))


def resource(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "metadata": {"name": "nightly", "namespace": "db", "uid": "1234-5678", "generation": 1, **metadata},
        "spec": copy.deepcopy(spec or VALID_SPEC),
    }


def pod_of(rendered: manifests.Rendered) -> dict[str, Any]:
    return rendered.cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("minor", schemas.SUPPORTED_MINORS)
def test_rendered_objects_are_valid_for_every_supported_kubernetes_minor(minor: str) -> None:
    spec = copy.deepcopy(VALID_SPEC) | {"targets": [{"name": "a"}, {"name": "b"}]}
    for rendered in (
        manifests.render(resource(), defaults=DEFAULTS),
        manifests.render(resource(spec), defaults=DEFAULTS),
    ):
        for obj in (rendered.config_map, rendered.cron_job):
            kubernetes_validate.validate(obj, minor, strict=True)


def test_rendering_is_deterministic() -> None:
    assert manifests.render(resource(), defaults=DEFAULTS) == manifests.render(resource(), defaults=DEFAULTS)


def test_the_config_map_holds_a_job_file_the_runner_accepts(tmp_path: pathlib.Path) -> None:
    rendered = manifests.render(resource(), defaults=DEFAULTS)
    [(key, text)] = rendered.config_map["data"].items()
    assert key == "nightly.yml"
    (tmp_path / key).write_text(text)
    result = run_pgquartz("validate", key, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(text)
    assert job["connections"]["primary"]["passwordEnv"] == "PGQ_PASSWORD_PRIMARY"
    assert job["etcdConfig"] == {"endpoints": ["etcd.pgq:2379"], "lockKey": "db/nightly", "lockTimeout": "1m"}
    assert job["git"] == {"disable": True}
    assert "password" not in text.replace("passwordEnv", "")


def test_a_budget_is_scoped_to_the_resources_namespace_unless_the_admin_allows_otherwise(
    tmp_path: pathlib.Path,
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["lock"] = {"budget": {"slots": 2}}
    text = next(iter(manifests.render(resource(spec), defaults=DEFAULTS).config_map["data"].values()))
    assert yaml.safe_load(text)["etcdConfig"]["budget"] == {"slots": 2, "scope": "db"}
    (tmp_path / "nightly.yml").write_text(text)
    shown = run_pgquartz("plan", "nightly.yml", cwd=tmp_path)
    assert "budget: 2 at once, keyed by the database cluster of connection 'primary'" in shown.stdout
    spec["lock"] = {"budget": {"slots": 1, "key": "reindex"}}
    relaxed = manifests.Defaults(
        image=DEFAULTS.image,
        etcd_endpoints=DEFAULTS.etcd_endpoints,
        policy=policy.Policy(allow_cross_namespace_locks=True),
    )
    shared = yaml.safe_load(
        next(iter(manifests.render(resource(spec), defaults=relaxed).config_map["data"].values()))
    )
    assert shared["etcdConfig"]["budget"] == {"slots": 1, "key": "reindex"}


def test_lock_defaults_come_from_the_operator_and_the_resource_name() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["lock"] = {}
    job = yaml.safe_load(
        next(iter(manifests.render(resource(spec), defaults=DEFAULTS).config_map["data"].values()))
    )
    assert job["etcdConfig"] == {"endpoints": ["etcd.pgq:2379"], "lockKey": "db/nightly", "lockTimeout": "1m"}


def test_the_pod_fits_the_restricted_pod_security_standard() -> None:
    pod = pod_of(manifests.render(resource(), defaults=DEFAULTS))
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "job", "mountPath": manifests.JOB_DIR, "readOnly": True} in container["volumeMounts"]


def test_the_pod_runs_the_job_with_json_logs_a_summary_and_secret_passwords() -> None:
    pod = pod_of(manifests.render(resource(), defaults=DEFAULTS))
    container = pod["containers"][0]
    assert container["image"] == "registry.example/pgquartz/runner:1.0"
    assert container["args"] == [
        "run",
        "/etc/pgquartz/job/nightly.yml",
        "--log-format",
        "json",
        "--summary-file",
        "/dev/termination-log",
    ]
    assert {
        "name": "PGQ_PASSWORD_PRIMARY",
        "valueFrom": {"secretKeyRef": {"name": "pg-maint", "key": "password"}},
    } in container["env"]
    assert pod["restartPolicy"] == "Never"


def test_the_job_never_retries_an_invalid_job_file_or_a_role_mismatch_but_does_retry_a_failover() -> None:
    job = manifests.render(resource(), defaults=DEFAULTS).cron_job["spec"]["jobTemplate"]["spec"]
    [never, _] = job["podFailurePolicy"]["rules"]
    assert never["action"] == "FailJob" and never["onExitCodes"]["values"] == [2, 3]
    assert 6 not in never["onExitCodes"]["values"] and job["backoffLimit"] >= 1  # a failover: run again
    assert job["activeDeadlineSeconds"] == 3600 + manifests.DEADLINE_SLACK
    assert job["ttlSecondsAfterFinished"] > 0


def test_schedule_settings_pass_through() -> None:
    spec = copy.deepcopy(VALID_SPEC) | {
        "suspend": True,
        "concurrencyPolicy": "Replace",
        "startingDeadlineSeconds": 300,
        "successfulJobsHistoryLimit": 5,
    }
    cron = manifests.render(resource(spec), defaults=DEFAULTS).cron_job["spec"]
    assert cron["schedule"] == "15 23 * * *" and cron["timeZone"] == "Etc/UTC" and cron["suspend"] is True
    assert cron["concurrencyPolicy"] == "Replace" and cron["startingDeadlineSeconds"] == 300
    assert cron["successfulJobsHistoryLimit"] == 5 and cron["failedJobsHistoryLimit"] == 1


def test_concurrency_policy_defaults_to_forbid() -> None:
    assert manifests.render(resource(), defaults=DEFAULTS).cron_job["spec"]["concurrencyPolicy"] == "Forbid"


def test_children_get_our_labels_and_an_owner_never_the_resources_labels() -> None:
    obj = resource(
        labels={"app.kubernetes.io/instance": "argo-app", "team": "dba"},
        annotations={"argocd.argoproj.io/tracking-id": "x"},
    )
    rendered = manifests.render(obj, defaults=DEFAULTS)
    for child in (rendered.config_map, rendered.cron_job):
        assert child["metadata"]["labels"] == {
            "pgquartz.io/job": "nightly",
            "app.kubernetes.io/managed-by": "pgquartz-operator",
        }
        assert set(child["metadata"]["annotations"]) == {"pgquartz.io/job-name", "pgquartz.io/rendered"}
        [owner] = child["metadata"]["ownerReferences"]
        assert owner["kind"] == "PgQuartzJob" and owner["uid"] == "1234-5678" and owner["controller"] is True


def test_targets_become_an_indexed_job_sharing_one_job_file(tmp_path: pathlib.Path) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["targets"] = [
        {"name": "node-a", "connections": {"primary": {"host": "pg-a"}}},
        {"name": "node-b", "connections": {"primary": {"host": "pg-b"}}},
    ]
    rendered = manifests.render(resource(spec), defaults=DEFAULTS)
    kubernetes_validate.validate(rendered.cron_job, "1.30.0", strict=True)
    files = rendered.config_map["data"]
    assert sorted(files) == [
        "nightly.t0.conn",
        "nightly.t1.conn",
        "nightly.yml",
    ]  # the job once, not per target
    assert yaml.safe_load(files["nightly.t1.conn"]) == {"primary": {"host": "pg-b"}}
    assert yaml.safe_load(files["nightly.yml"])["etcdConfig"]["lockKey"] == "db/nightly"  # one key for all
    job = rendered.cron_job["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == 2 and job["parallelism"] == 2
    container = job["template"]["spec"]["containers"][0]
    assert container["args"][1] == "/etc/pgquartz/job/nightly.yml"
    variables = [env["name"] for env in container["env"]]
    assert variables.index("JOB_COMPLETION_INDEX") < variables.index("PGQUARTZ_CONNECTION_PARAMS")
    [params] = [env["value"] for env in container["env"] if env["name"] == "PGQUARTZ_CONNECTION_PARAMS"]
    assert params == "/etc/pgquartz/job/nightly.t$(JOB_COMPLETION_INDEX).conn"
    for key, text in files.items():
        (tmp_path / key).write_text(text)
    for index, host in enumerate(["pg-a", "pg-b"]):
        done = run_pgquartz(
            "plan",
            "nightly.yml",
            "--json",
            cwd=tmp_path,
            env={"PGQUARTZ_CONNECTION_PARAMS": f"nightly.t{index}.conn"},
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["connections"]["primary"]["conn_params"]["host"] == host


def test_a_target_params_file_naming_an_unknown_connection_is_an_invalid_job(tmp_path: pathlib.Path) -> None:
    rendered = manifests.render(resource(), defaults=DEFAULTS)
    (tmp_path / "nightly.yml").write_text(rendered.config_map["data"]["nightly.yml"])
    (tmp_path / "t.conn").write_text("replica: {host: pg-x}\n")
    done = run_pgquartz("validate", "nightly.yml", cwd=tmp_path, env={"PGQUARTZ_CONNECTION_PARAMS": "t.conn"})
    assert done.returncode == 2 and "no connection named 'replica'" in done.stderr


def test_scripts_and_pod_overrides() -> None:
    spec = copy.deepcopy(VALID_SPEC) | {
        "scripts": {"configMapRef": {"name": "my-scripts"}},
        "resources": {"limits": {"memory": "256Mi"}},
        "podTemplate": {
            "nodeSelector": {"disk": "ssd"},
            "serviceAccountName": "maint",
            "tolerations": [{"key": "db", "operator": "Exists", "effect": "NoSchedule"}],
            "annotations": {"example.com/team": "dba"},
        },
    }
    rendered = manifests.render(resource(spec), defaults=DEFAULTS)
    kubernetes_validate.validate(rendered.cron_job, "1.37.0", strict=True)
    template = rendered.cron_job["spec"]["jobTemplate"]["spec"]["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"} and pod["serviceAccountName"] == "maint"
    assert pod["tolerations"][0]["key"] == "db"
    assert template["metadata"]["annotations"] == {"example.com/team": "dba"}
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "256Mi"}}
    assert {"name": "scripts", "configMap": {"name": "my-scripts", "defaultMode": 0o555}} in pod["volumes"]
    job = yaml.safe_load(next(iter(rendered.config_map["data"].values())))
    assert job["workdir"] == manifests.SCRIPTS_DIR


def test_failover_policies_retries_and_gates_reach_the_job_file(tmp_path: pathlib.Path) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"]["primary"]["onFailover"] = "continue"
    spec["connections"]["primary"]["retry"] = {"on": ["admin_shutdown", "connection_failure"], "attempts": 5}
    spec["job"]["gates"] = {
        "wait": "10m",
        "require": [{"maxReplicationLag": "64MB", "connection": "primary"}],
    }
    rendered = manifests.render(resource(spec), defaults=DEFAULTS)
    [(key, text)] = rendered.config_map["data"].items()
    (tmp_path / key).write_text(text)
    plan = run_pgquartz("plan", key, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "on failover: continue; retried on admin_shutdown, connection_failure (5 attempts" in plan.stdout
    assert "replication lag at most 64MB (on 'primary')" in plan.stdout
    assert yaml.safe_load(text)["connections"]["primary"]["retry"] == {
        "on": ["admin_shutdown", "connection_failure"],
        "attempts": 5,
    }


@pytest.mark.parametrize(
    ("kind", "role", "user", "host", "secret"),
    [
        ("CloudNativePG", "primary", None, "main-rw.db.svc", "main-app"),
        ("CloudNativePG", "standby", "postgres", "main-ro.db.svc", "main-superuser"),
        ("CloudNativePG", "all", "app", "main-r.db.svc", "main-app"),
        ("CloudNativePG", "primary", "reporting", "main-rw.db.svc", None),  # CNPG makes no Secret for it
        (
            "Zalando",
            "primary",
            "foo_user",
            "main.db.svc",
            "foo-user.main.credentials.postgresql.acid.zalan.do",
        ),
        (
            "Zalando",
            "standby",
            None,
            "main-repl.db.svc",
            "postgres.main.credentials.postgresql.acid.zalan.do",
        ),
        ("Crunchy", "primary", None, "main-primary.db.svc", "main-pguser-main"),
        ("Crunchy", "standby", "hippo", "main-replicas.db.svc", "main-pguser-hippo"),
    ],
)
def test_a_connection_to_a_cluster_takes_its_service_and_its_operators_user_secret(
    kind: str, role: str, user: str | None, host: str, secret: str | None, tmp_path: pathlib.Path
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    params = {"dbname": "app", **({"user": user} if user else {})}
    spec["connections"] = {
        "primary": {"role": role, "cluster": {"kind": kind, "name": "main"}, "params": params}
    }
    spec["job"] = {"steps": {"s": {"commands": [{"type": "primary", "inline": "select 1"}]}}}
    rendered = manifests.render(resource(spec), defaults=DEFAULTS)
    kubernetes_validate.validate(rendered.cron_job, "1.30.0", strict=True)
    [(key, text)] = rendered.config_map["data"].items()
    connection = yaml.safe_load(text)["connections"]["primary"]
    assert connection["conn_params"]["host"] == host and connection["conn_params"]["port"] == "5432"
    env = {entry["name"]: entry for entry in pod_of(rendered)["containers"][0]["env"]}
    if secret is None:
        assert "passwordEnv" not in connection and "PGQ_PASSWORD_PRIMARY" not in env
    else:
        assert connection["passwordEnv"] == "PGQ_PASSWORD_PRIMARY"
        assert env["PGQ_PASSWORD_PRIMARY"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "password"}
    (tmp_path / key).write_text(text)
    assert run_pgquartz("validate", key, cwd=tmp_path).returncode == 0


def test_targets_from_a_cluster_are_one_per_instance_in_name_order(tmp_path: pathlib.Path) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"] = {
        "primary": {
            "role": "all",
            "cluster": {"kind": "Crunchy", "name": "hippo"},
            "params": {"dbname": "app"},
        }
    }
    spec["targetsFrom"] = {"cluster": {"kind": "Crunchy", "name": "hippo"}, "instances": "replicas"}
    assert clusters.selector(clusters.ClusterKind.CRUNCHY, "hippo", "replicas") == (
        "postgres-operator.crunchydata.com/cluster=hippo,postgres-operator.crunchydata.com/role=replica"
    )
    pods = [
        {"metadata": {"name": "hippo-b"}, "status": {"podIP": "10.1.0.2"}},
        {"metadata": {"name": "hippo-a"}, "status": {"podIP": "10.1.0.1"}},
        {"metadata": {"name": "hippo-c"}, "status": {}},  # not scheduled yet: no address
        {
            "metadata": {"name": "hippo-d", "deletionTimestamp": "2026-12-08T00:00:00Z"},
            "status": {"podIP": "10.1.0.4"},
        },
    ]
    rendered = manifests.render(resource(spec), defaults=DEFAULTS, instances=clusters.instances_of(pods))
    files = rendered.config_map["data"]
    assert yaml.safe_load(files["nightly.t0.conn"]) == {"primary": {"host": "10.1.0.1"}}
    assert yaml.safe_load(files["nightly.t1.conn"]) == {"primary": {"host": "10.1.0.2"}}
    assert "nightly.t2.conn" not in files
    assert rendered.cron_job["spec"]["jobTemplate"]["spec"]["completions"] == 2
    kubernetes_validate.validate(rendered.cron_job, "1.30.0", strict=True)
    with pytest.raises(ValueError, match="instances"):
        manifests.render(resource(spec), defaults=DEFAULTS)
    odd = [clusters.Instance("hippo.a", "10.1.0.1"), clusters.Instance("h" * 70, "10.1.0.2")]
    names = [
        target.name
        for target in manifests.render(resource(spec), defaults=DEFAULTS, instances=odd).spec.targets
    ]
    assert names == ["instance-0", "instance-1"]  # pod names that are no DNS label


@pytest.mark.parametrize(("kind", "secret"), [("CloudNativePG", "main-ca"), ("Crunchy", "main-cluster-cert")])
def test_verify_full_mounts_the_clusters_ca_and_points_sslrootcert_at_it(
    kind: str, secret: str, tmp_path: pathlib.Path
) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    params = {"dbname": "app", "sslmode": "verify-full"}
    spec["connections"] = {
        "primary": {"role": "primary", "cluster": {"kind": kind, "name": "main"}, "params": params}
    }
    spec["job"] = {"steps": {"s": {"commands": [{"type": "primary", "inline": "select 1"}]}}}
    rendered = manifests.render(resource(spec), defaults=DEFAULTS)
    for minor in schemas.SUPPORTED_MINORS:
        kubernetes_validate.validate(rendered.cron_job, minor, strict=True)
    [(key, text)] = rendered.config_map["data"].items()
    assert yaml.safe_load(text)["connections"]["primary"]["conn_params"]["sslrootcert"] == (
        "/etc/pgquartz/ca/primary/ca.crt"
    )
    pod = pod_of(rendered)
    [volume] = [v for v in pod["volumes"] if v["name"].startswith("ca-")]
    assert volume["secret"]["secretName"] == secret and volume["secret"]["items"] == [
        {"key": "ca.crt", "path": "ca.crt"}
    ]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/etc/pgquartz/ca/primary"]["readOnly"] is True
    assert (("Secret", secret, "ca.crt")) in [(r.kind, r.name, r.key) for r in rendered.references]
    assert not validation.job_file_problems(rendered.config_map)
    (tmp_path / key).write_text(text)
    assert run_pgquartz("validate", key, cwd=tmp_path).returncode == 0
    own = copy.deepcopy(spec)
    own["connections"]["primary"]["params"]["sslrootcert"] = "/etc/ssl/mine.crt"  # the user's own: kept
    assert not [
        v
        for v in pod_of(manifests.render(resource(own), defaults=DEFAULTS))["volumes"]
        if v["name"].startswith("ca-")
    ]


def test_a_zalando_cluster_has_no_ca_of_its_operators_to_mount() -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["connections"] = {
        "primary": {"cluster": {"kind": "Zalando", "name": "acid"}, "params": {"sslmode": "verify-full"}}
    }
    spec["job"] = {"steps": {"s": {"commands": [{"type": "primary", "inline": "select 1"}]}}}
    rendered = manifests.render(resource(spec), defaults=DEFAULTS)
    assert not [v for v in pod_of(rendered)["volumes"] if v["name"].startswith("ca-")]
