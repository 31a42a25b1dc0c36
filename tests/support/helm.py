"""The chart through the real Helm engine: install and upgrade into the emulated API, bundle rendering.

Helm runs as ``tests/support/helm_engine.py`` in ``.venv-helm`` (helm-sdkpy needs Python >= 3.12;
``dev.py setup`` makes that environment when such a Python exists). :func:`engine` says whether it
is there; tests skip, saying why, when it is not. :func:`helm` sends requests (several run in one
engine process, as Helm's in-memory release store lives only that long) and returns the releases.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pgquartz"
BUNDLE = ROOT / "deploy" / "pgquartz.yaml"
VENV = ROOT / ".venv-helm"
ENGINE = pathlib.Path(__file__).with_name("helm_engine.py")
NAMESPACE = "pgquartz-system"

#: The kinds the chart makes (resource, kind, namespaced, has status), for the emulated API.
CHART_RESOURCES = (
    ("apps/v1/deployments", "Deployment", True, True),
    ("v1/serviceaccounts", "ServiceAccount", True, False),
    ("v1/services", "Service", True, True),
    ("rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole", False, False),
    ("rbac.authorization.k8s.io/v1/clusterrolebindings", "ClusterRoleBinding", False, False),
    ("rbac.authorization.k8s.io/v1/roles", "Role", True, False),
    ("rbac.authorization.k8s.io/v1/rolebindings", "RoleBinding", True, False),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, True),
    ("monitoring.coreos.com/v1/servicemonitors", "ServiceMonitor", True, False),
)


class HelmError(Exception):
    """What the Helm engine refused (bad values, an unreachable API, …)."""


def engine() -> pathlib.Path | None:
    """The Python of ``.venv-helm`` if it has helm-sdkpy, else None."""
    python = VENV / "bin" / "python"
    return python if (VENV / ".helm-sdkpy-installed").exists() and python.exists() else None


WHY_NOT = "the Helm engine (helm-sdkpy) needs Python >= 3.12: none was found, so .venv-helm was not made"


def helm(
    requests: Sequence[Mapping[str, Any]], *, kubeconfig: pathlib.Path, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Run install/upgrade requests (``{"action", "release", "values"}``) in one engine process."""
    python = engine()
    if python is None:
        raise HelmError(WHY_NOT)
    full = [
        {"chart": str(CHART), "namespace": namespace, "kubeconfig": str(kubeconfig), **request}
        for request in requests
    ]
    done = subprocess.run(
        [str(python), str(ENGINE)],
        input=json.dumps(full),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HELM_DRIVER": "memory"},
        check=False,
    )
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise HelmError(f"the Helm engine failed (exit {done.returncode}): {done.stderr[-2000:]}") from None
    if isinstance(answer, dict) and "error" in answer:
        raise HelmError(answer["error"])
    return list(answer)


def manifest_objects(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The objects of a release's rendered manifest."""
    return [obj for obj in yaml.safe_load_all(str(release.get("manifest", ""))) if obj]


def bundle_text(kubeconfig: pathlib.Path) -> str:
    """The plain install bundle: the namespace, the CRD and the chart rendered with its defaults."""
    [release] = helm([{"action": "install", "release": "pgquartz"}], kubeconfig=kubeconfig)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    crd = (CHART / "crds" / "pgquartzjobs.pgquartz.io.yaml").read_text()
    header = (
        "# pgquartz: the operator, its RBAC and the PgQuartzJob CRD, for `kubectl apply -f`.\n"
        "# Generated from charts/pgquartz with its default values by `python -m tests.support.helm`;\n"
        "# do not edit (a test fails when it is stale).\n"
    )
    documents = [yaml.safe_dump(namespace, sort_keys=False), crd.split("\n", 1)[1]]
    documents += [yaml.safe_dump(obj, sort_keys=False) for obj in manifest_objects(release)]
    return header + "---\n" + "---\n".join(documents)


def _write_bundle() -> None:
    from tests.support.kube import emulator_process, write_kubeconfig

    with emulator_process() as (_, url):
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            text = bundle_text(write_kubeconfig(url, pathlib.Path(scratch) / "kubeconfig"))
    BUNDLE.parent.mkdir(exist_ok=True)
    BUNDLE.write_text(text)
    print(f"wrote {BUNDLE.relative_to(ROOT)}")


if __name__ == "__main__":
    _write_bundle()
