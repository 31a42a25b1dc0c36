"""The Job controller and the kubelet, played over the emulated API with podman: pods run for real.

:class:`Kubelet` takes the Jobs in a namespace that have not finished, makes
their Pods as the Job controller does (Indexed Jobs: one per index, with the
``batch.kubernetes.io/job-completion-index`` annotation), runs each Pod's one
container with podman exactly as its spec says, and writes back what the
kubelet and the Job controller would: the Pod's phase and container state (exit
code, termination message), the Job's counts and its ``Complete`` or
``Failed`` condition, applying the Job's ``podFailurePolicy`` and
``backoffLimit``.

What it honours, and how: ``image``; ``command``/``args`` with ``$(VAR)``
expansion; ``env`` values, ``secretKeyRef`` (read from the API),
``fieldRef`` (``metadata.name``, ``metadata.namespace``, annotations);
``configMap`` volumes (the ConfigMap's keys written with ``defaultMode``,
mounted read-only) and ``emptyDir`` (a tmpfs); ``runAsUser``/``runAsGroup``,
``runAsNonRoot``, ``readOnlyRootFilesystem``, ``allowPrivilegeEscalation:
false`` (no-new-privileges), ``capabilities.drop: [ALL]``, the RuntimeDefault
seccomp profile (podman's default), ``terminationMessagePath`` (a writable file)
with ``FallbackToLogsOnError``, ``resources.limits`` (``--memory``,
``--cpus``). Pods use the host's network, to reach the PostgreSQL and etcd the
tests run. Any other pod-spec field set to anything but the API server's
default raises :class:`Unsupported`: a pod the harness cannot run as written
fails the test instead of running differently.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import pathlib
import re
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tests.support import images

ACCEPTED_POD_FIELDS = {
    "containers": None,
    "volumes": None,
    "securityContext": None,
    "restartPolicy": "Never",
    "automountServiceAccountToken": False,
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
    "terminationGracePeriodSeconds": None,
    "enableServiceLinks": True,
    "priority": 0,
}
"""Pod-spec fields the harness honours (None: any value) or accepts only with this value."""
ACCEPTED_CONTAINER_FIELDS = {
    "name", "image", "command", "args", "env", "volumeMounts", "securityContext", "resources",
    "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "workingDir",
}  # fmt: skip
MESSAGE_LIMIT = 4096  # the kubelet keeps at most 4096 bytes of a termination message


class Unsupported(Exception):
    """A pod-spec field the harness does not honour."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (an unknown variable stays as written)."""
    return _REFERENCE.sub(lambda match: variables.get(match.group(1), match.group(0)), text)


@dataclasses.dataclass
class RunPod:
    name: str
    index: int | None
    process: subprocess.Popen[str]
    message_file: pathlib.Path
    policy: str


class Kubelet:
    def __init__(self, url: str, namespace: str, *, mounts: Sequence[tuple[str, str]] = ()) -> None:
        """``mounts``: host paths the test infrastructure shares with every pod (a PostgreSQL socket
        directory, say), as ``(host, container)``; never a substitute for the pod's own volumes."""
        self.url, self.namespace, self.mounts = url.rstrip("/"), namespace, list(mounts)
        self.scratch = pathlib.Path(tempfile.mkdtemp(prefix="pgq-kubelet-"))
        self.scratch.chmod(0o755)
        self.logs: dict[str, str] = {}

    # --- the API ------------------------------------------------------------------------------

    def _api(self, method: str, path: str, body: Any = None, patch: bool = False) -> dict[str, Any]:
        content_type = "application/merge-patch+json" if patch else "application/json"
        payload = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=payload, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # an error status raises
            data: dict[str, Any] = json.loads(response.read())
        return data

    def _core(self, kind: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/{kind}"

    def _batch(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs"

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        jobs = self._api("GET", self._batch()).get("items", [])
        return [job for job in jobs if not self._finished(job)]

    @staticmethod
    def _finished(job: Mapping[str, Any]) -> bool:
        conditions = (job.get("status") or {}).get("conditions") or []
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)

    # --- the Job controller --------------------------------------------------------------------

    def run_pending(self) -> list[dict[str, Any]]:
        """Run every unfinished Job of the namespace to its end; the finished Jobs."""
        return [self.run_job(job) for job in self.unfinished_jobs()]

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        spec = job["spec"]
        name = job["metadata"]["name"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = int(spec.get("completions") or 1)
        backoff_limit = int(spec.get("backoffLimit", 6))
        self._api(
            "PATCH",
            f"{self._batch()}/{name}/status",
            {"status": {"startTime": _now(), "active": 0}},
            patch=True,
        )
        pending = list(range(completions)) if indexed else [None]
        succeeded, failed, verdict = 0, 0, ""
        while pending and not verdict:
            running = [self._start(job, index) for index in pending]
            pending = []
            for pod in running:
                code = pod.process.wait(timeout=600)
                self.logs[pod.name] = (pod.process.stdout.read() if pod.process.stdout else "")[-20000:]
                message = pod.message_file.read_text(errors="replace")[:MESSAGE_LIMIT]
                if not message and code != 0 and pod.policy == "FallbackToLogsOnError":
                    message = "\n".join(self.logs[pod.name].splitlines()[-80:])[-2048:]
                self._finish_pod(pod.name, code, message)
                if code == 0:
                    succeeded += 1
                    continue
                failed += 1
                action = self._policy_action(spec, code)
                if action == "FailJob":
                    verdict = "PodFailurePolicy"
                elif action != "Ignore" and failed > backoff_limit:
                    verdict = "BackoffLimitExceeded"
                else:
                    pending.append(pod.index)
        status: dict[str, Any] = {"succeeded": succeeded, "failed": failed, "active": 0}
        condition = {"status": "True", "lastTransitionTime": _now(), "lastProbeTime": _now()}
        if verdict:
            status["conditions"] = [{"type": "Failed", "reason": verdict, **condition}]
        else:
            status["completionTime"] = _now()
            status["conditions"] = [{"type": "Complete", **condition}]
        return self._api("PATCH", f"{self._batch()}/{name}/status", {"status": status}, patch=True)

    @staticmethod
    def _policy_action(spec: Mapping[str, Any], code: int) -> str | None:
        for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
            codes = rule.get("onExitCodes")
            if codes and (code in codes.get("values", [])) == (codes.get("operator") == "In"):
                return str(rule["action"])
        return None

    # --- the kubelet ----------------------------------------------------------------------------

    def _start(self, job: Mapping[str, Any], index: int | None) -> RunPod:
        template = job["spec"]["template"]
        job_name = job["metadata"]["name"]
        suffix = uuid.uuid4().hex[:5]
        name = f"{job_name}-{index}-{suffix}" if index is not None else f"{job_name}-{suffix}"
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        if index is not None:
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "job-name": job_name}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        created = self._api("POST", self._core("pods"), pod)
        argv, message_file, policy = self.podman_run(created)
        process = subprocess.Popen(
            argv, env=images.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._api(
            "PATCH", f"{self._core('pods')}/{name}/status", {"status": {"phase": "Running"}}, patch=True
        )
        return RunPod(name, index, process, message_file, policy)

    def _finish_pod(self, name: str, code: int, message: str) -> None:
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "runner",
                    "image": "",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
        self._api("PATCH", f"{self._core('pods')}/{name}/status", {"status": status}, patch=True)

    def podman_run(self, pod: Mapping[str, Any]) -> tuple[list[str], pathlib.Path, str]:
        """The podman command line for ``pod``, its termination-message file and policy."""
        spec, metadata = pod["spec"], pod["metadata"]
        for field, value in spec.items():
            if field not in ACCEPTED_POD_FIELDS:
                raise Unsupported(f"pod spec field {field!r} is not honoured by the harness")
            wanted = ACCEPTED_POD_FIELDS[field]
            if wanted is not None and value != wanted:
                raise Unsupported(f"pod spec {field}={value!r} is not honoured (only {wanted!r})")
        [container] = spec["containers"]
        unknown = set(container) - ACCEPTED_CONTAINER_FIELDS
        if unknown:
            raise Unsupported(f"container fields {sorted(unknown)} are not honoured by the harness")
        workdir = self.scratch / metadata["name"]
        workdir.mkdir(mode=0o755)
        argv = ["podman", "run", "--rm", "--network", "host", "--name", f"pgq-{metadata['name']}"]
        argv += self._security(spec.get("securityContext") or {}, container.get("securityContext") or {})
        argv += self._resources(container.get("resources") or {})
        variables = self._environment(container.get("env") or [], pod)
        for key, value in variables.items():
            argv += ["--env", f"{key}={value}"]
        argv += self._volumes(spec.get("volumes") or [], container.get("volumeMounts") or [], workdir)
        for host, inside in self.mounts:
            argv += ["-v", f"{host}:{inside}"]
        message_file = workdir / "termination-log"
        message_file.write_text("")
        message_file.chmod(0o666)
        argv += ["-v", f"{message_file}:{container.get('terminationMessagePath', '/dev/termination-log')}"]
        if "workingDir" in container:  # as the kubelet passes it to the runtime (podman's --workdir)
            argv += ["--workdir", container["workingDir"]]
        if "command" in container:
            argv += ["--entrypoint", json.dumps([expand(part, variables) for part in container["command"]])]
        argv.append(container["image"])
        argv += [expand(part, variables) for part in container.get("args") or []]
        return argv, message_file, str(container.get("terminationMessagePolicy", "File"))

    @staticmethod
    def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
        merged = {**pod, **container}
        known = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "seccompProfile",
                 "readOnlyRootFilesystem", "allowPrivilegeEscalation", "capabilities"}  # fmt: skip
        unknown = set(merged) - known
        if unknown:
            raise Unsupported(f"securityContext fields {sorted(unknown)} are not honoured")
        argv: list[str] = []
        user = merged.get("runAsUser")
        if merged.get("runAsNonRoot") and user in (None, 0):
            raise Unsupported("runAsNonRoot without a non-zero runAsUser")
        if user is not None:
            argv += ["--user", f"{user}:{merged.get('runAsGroup', user)}"]
        if merged.get("fsGroup") is not None:
            argv += ["--group-add", str(merged["fsGroup"])]
        if (merged.get("seccompProfile") or {}).get("type", "RuntimeDefault") != "RuntimeDefault":
            raise Unsupported("only the RuntimeDefault seccomp profile is honoured")
        if merged.get("readOnlyRootFilesystem"):
            argv.append("--read-only")
        if merged.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        capabilities = merged.get("capabilities") or {}
        if set(capabilities) - {"drop"} or capabilities.get("drop", ["ALL"]) != ["ALL"]:
            raise Unsupported(f"capabilities {capabilities} are not honoured (only drop: [ALL])")
        if capabilities:
            argv += ["--cap-drop", "ALL"]
        return argv

    @staticmethod
    def _resources(resources: Mapping[str, Any]) -> list[str]:
        argv: list[str] = []
        limits = resources.get("limits") or {}
        if "memory" in limits:
            argv += ["--memory", str(limits["memory"]).replace("Mi", "m").replace("Gi", "g")]
        if "cpu" in limits:
            cpu = str(limits["cpu"])
            argv += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
        if set(limits) - {"memory", "cpu"}:
            raise Unsupported(f"resource limits {sorted(limits)} are not honoured")
        return argv

    def _environment(self, env: Sequence[Mapping[str, Any]], pod: Mapping[str, Any]) -> dict[str, str]:
        variables: dict[str, str] = {}
        for item in env:
            source = item.get("valueFrom")
            if source is None:
                variables[item["name"]] = expand(str(item.get("value", "")), variables)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self._api("GET", f"{self._core('secrets')}/{ref['name']}")
                variables[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif "fieldRef" in source:
                variables[item["name"]] = self._field(pod, source["fieldRef"]["fieldPath"])
            else:
                raise Unsupported(f"env {item['name']}: valueFrom {sorted(source)} is not honoured")
        return variables

    @staticmethod
    def _field(pod: Mapping[str, Any], path: str) -> str:
        metadata = pod["metadata"]
        if path in ("metadata.name", "metadata.namespace"):
            return str(metadata[path.split(".", 1)[1]])
        match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
        if match:
            return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
        raise Unsupported(f"fieldRef {path!r} is not honoured")

    def _volumes(
        self, volumes: Sequence[Mapping[str, Any]], mounts: Sequence[Mapping[str, Any]], workdir: pathlib.Path
    ) -> list[str]:
        by_name = {volume["name"]: volume for volume in volumes}
        argv: list[str] = []
        for mount in mounts:
            if set(mount) - {"name", "mountPath", "readOnly"}:
                raise Unsupported(f"volumeMount fields {sorted(mount)} are not honoured")
            volume = by_name[mount["name"]]
            if "emptyDir" in volume:
                argv += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
            elif "configMap" in volume:
                source = volume["configMap"]
                if set(source) - {"name", "defaultMode"}:
                    raise Unsupported(f"configMap volume fields {sorted(source)} are not honoured")
                config_map = self._api("GET", f"{self._core('configmaps')}/{source['name']}")
                folder = workdir / f"volume-{volume['name']}"
                folder.mkdir(mode=0o755)
                for key, text in (config_map.get("data") or {}).items():
                    (folder / key).write_text(text)
                    (folder / key).chmod(int(source.get("defaultMode", 0o644)))
                argv += ["-v", f"{folder}:{mount['mountPath']}:ro"]  # configMap volumes are read-only
            else:
                raise Unsupported(f"volume {volume['name']!r} of kind {sorted(set(volume) - {'name'})}")
        return argv
