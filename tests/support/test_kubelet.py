"""The pod harness runs a pod as its spec says, or refuses: a field it cannot honour fails the test."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kubelet import Kubelet, Unsupported, expand


def pod(**spec: Any) -> dict[str, Any]:
    container = {
        "name": "runner",
        "image": "pgquartz/runner:1",
        "args": ["run", "$(JOB)"],
        "env": [
            {"name": "JOB", "value": "/etc/job.yml"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": "/dev/termination-log",
    }
    return {
        "metadata": {
            "name": "p-1",
            "namespace": "db",
            "annotations": {"batch.kubernetes.io/job-completion-index": "2"},
        },
        "spec": {
            "containers": [container],
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 65532, "runAsNonRoot": True},
            **spec,
        },
    }


def test_a_pod_becomes_the_podman_command_its_spec_says() -> None:
    argv, _, policy = Kubelet("http://127.0.0.1:1", "db").podman_run(pod())
    assert argv[:2] == ["podman", "run"] and "--read-only" in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--user" in argv and argv[argv.index("--user") + 1] == "65532:65532"
    assert "POD=p-1" in argv and "JOB=/etc/job.yml" in argv
    assert argv[-3:] == ["pgquartz/runner:1", "run", "/etc/job.yml"]
    assert policy == "File"


@pytest.mark.parametrize(
    "spec",
    [
        {"nodeSelector": {"disk": "ssd"}},
        {"tolerations": [{"operator": "Exists"}]},
        {"serviceAccountName": "admin"},
        {"restartPolicy": "Always"},
        {"hostNetwork": True},
    ],
)
def test_a_field_the_harness_does_not_honour_fails_instead_of_being_ignored(spec: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        Kubelet("http://127.0.0.1:1", "db").podman_run(pod(**spec))


def test_a_containers_working_directory_is_the_runtimes() -> None:
    working = pod()
    working["spec"]["containers"][0]["workingDir"] = "/etc/pgquartz/scripts"
    argv, _, _ = Kubelet("http://127.0.0.1:1", "db").podman_run(working)
    assert argv[argv.index("--workdir") + 1] == "/etc/pgquartz/scripts"
    assert argv.index("--workdir") < argv.index("pgquartz/runner:1")


def test_container_fields_it_cannot_honour_fail_too() -> None:
    unhonoured = pod()
    unhonoured["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}
    with pytest.raises(Unsupported, match="livenessProbe"):
        Kubelet("http://127.0.0.1:1", "db").podman_run(unhonoured)


def test_variable_references_expand_as_kubernetes_does() -> None:
    assert expand("/job/t$(INDEX).conn", {"INDEX": "3"}) == "/job/t3.conn"
    assert expand("$(MISSING)", {}) == "$(MISSING)"
