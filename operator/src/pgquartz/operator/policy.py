"""What a PgQuartzJob may ask for on a shared cluster: the cluster admin's rules, safe by default.

Creating a PgQuartzJob is creating pods: whoever may create one chooses what
those pods run and where. Kubernetes would let the spec pick any image, any
service account of the namespace (and its API rights), node selectors and
tolerations (``operator: Exists`` lands on control-plane nodes), and pod
annotations that sidecar injectors and meshes act on. The etcd lock is shared
by every namespace, so a lock key or endpoint of the tenant's choosing could
hold another team's jobs. By default (the operator's settings can widen each):

- images only from the runner image's own repository (``PGQUARTZ_ALLOWED_IMAGES``);
- no ``serviceAccountName``, ``tolerations`` or ``nodeSelector`` (``PGQUARTZ_ALLOW_*``);
- no pod annotations under Kubernetes' own prefixes or the usual injectors and meshes
  (``PGQUARTZ_DENIED_ANNOTATIONS``);
- lock endpoints are the operator's (``PGQUARTZ_ALLOW_LOCK_ENDPOINTS``), and lock keys live under the
  resource's namespace (``PGQUARTZ_ALLOW_CROSS_NAMESPACE_LOCKS``; manifests applies the prefix).

A refusal names the field and the setting, so a tenant knows what to ask the admin for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pgquartz.operator import resource

DENIED_ANNOTATIONS = (
    "kubernetes.io/",
    "k8s.io/",
    "sidecar.istio.io/",
    "istio.io/",
    "linkerd.io/",
    "config.linkerd.io/",
    "kuma.io/",
    "consul.hashicorp.com/",
    "vault.hashicorp.com/",
    "proxy.istio.io/",
)
"""Default denied pod-annotation prefixes: Kubernetes' own (``*.kubernetes.io/``, e.g. AppArmor and
seccomp overrides), service meshes' opt-outs and secret injectors."""


def repository(image: str) -> str:
    """``registry.example/pgquartz/runner:1.0`` → ``registry.example/pgquartz/runner``."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


@dataclasses.dataclass(frozen=True)
class Policy:
    allowed_images: tuple[str, ...] = ()
    """Repositories (``registry/path/name``) or prefixes ending in ``/``; ``*`` allows any image."""
    allow_service_accounts: bool = False
    allow_tolerations: bool = False
    allow_node_selectors: bool = False
    denied_annotations: tuple[str, ...] = DENIED_ANNOTATIONS
    """Exact keys, or prefixes ending in ``/`` (which also cover subdomains: ``kubernetes.io/`` denies
    ``container.apparmor.security.beta.kubernetes.io/x``)."""
    allow_lock_endpoints: bool = False
    allow_cross_namespace_locks: bool = False
    allow_cross_namespace_clusters: bool = False

    def image_allowed(self, image: str) -> bool:
        for entry in self.allowed_images:
            if entry == "*":
                return True
            if entry.endswith("/"):
                if image.startswith(entry):
                    return True
            elif image == entry or image.startswith((f"{entry}:", f"{entry}@")):
                return True
        return False

    def annotation_denied(self, key: str) -> bool:
        prefix, _, _ = key.rpartition("/")
        for entry in self.denied_annotations:
            if entry.endswith("/"):
                domain = entry[:-1]
                if prefix == domain or prefix.endswith(f".{domain}"):
                    return True
            elif key == entry:
                return True
        return False


def problems(spec: resource.PgQuartzJobSpec, policy: Policy, *, namespace: str | None = None) -> list[str]:
    """What ``spec`` (of a resource in ``namespace``) asks for that ``policy`` does not allow, each
    naming the field and the setting."""
    found: list[str] = []
    if not policy.allow_cross_namespace_clusters:
        named = [(f"spec.connections.{name}.cluster", c.cluster) for name, c in spec.connections.items()]
        if spec.targets_from is not None:
            named.append(("spec.targetsFrom.cluster", spec.targets_from.cluster))
        for field, cluster in named:
            if cluster is not None and cluster.namespace not in (None, namespace):
                found.append(
                    f"{field}.namespace: {cluster.namespace!r} is not this resource's namespace"
                    " (PGQUARTZ_ALLOW_CROSS_NAMESPACE_CLUSTERS)"
                )
    if spec.image is not None and not policy.image_allowed(spec.image):
        allowed = ", ".join(policy.allowed_images) or "none"
        found.append(
            f"spec.image: {spec.image!r} is not an allowed image ({allowed}; PGQUARTZ_ALLOWED_IMAGES)"
        )
    template = spec.pod_template
    if template is not None:
        if template.service_account_name and not policy.allow_service_accounts:
            found.append("spec.podTemplate.serviceAccountName: not allowed (PGQUARTZ_ALLOW_SERVICE_ACCOUNTS)")
        if template.tolerations and not policy.allow_tolerations:
            found.append("spec.podTemplate.tolerations: not allowed (PGQUARTZ_ALLOW_TOLERATIONS)")
        if template.node_selector and not policy.allow_node_selectors:
            found.append("spec.podTemplate.nodeSelector: not allowed (PGQUARTZ_ALLOW_NODE_SELECTORS)")
        denied = sorted(key for key in template.annotations if policy.annotation_denied(key))
        if denied:
            found.append(
                f"spec.podTemplate.annotations: {', '.join(denied)} not allowed (PGQUARTZ_DENIED_ANNOTATIONS)"
            )
    if spec.lock is not None and spec.lock.endpoints and not policy.allow_lock_endpoints:
        found.append("spec.lock.endpoints: the operator's endpoints are used (PGQUARTZ_ALLOW_LOCK_ENDPOINTS)")
    return found


def lock_key(key: str | None, *, namespace: str, name: str, policy: Policy) -> str:
    """The etcd lock key a resource's runs use: under its namespace unless the admin allows otherwise."""
    if key is None:
        return f"{namespace}/{name}"
    if policy.allow_cross_namespace_locks or key.startswith(f"{namespace}/"):
        return key
    return f"{namespace}/{key}"


def budget(slots: int, key: str | None, *, namespace: str, policy: Policy) -> dict[str, Any]:
    """A resource's budget as its job file says it: scoped to its namespace (a key of another tenant's,
    or a cluster they share, never takes this one's slots) unless the admin allows otherwise."""
    rendered: dict[str, Any] = {"slots": slots}
    if key is not None:
        rendered["key"] = key
    if not policy.allow_cross_namespace_locks:
        rendered["scope"] = namespace
    return rendered
