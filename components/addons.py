"""The addons of a learning cluster, built with pyyaml: kustomizations over the pinned upstream
manifests of metrics-server and local-path-provisioner (fetched at run time), and the Headlamp
dashboard's manifest, which is this project's own (upstream publishes none that is pinned)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .config import Settings, versioned
from .config_schema import IMAGE_REPOSITORY_UPSTREAM

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
METRICS_SERVER_IMAGE = f"{IMAGE_REPOSITORY_UPSTREAM}/metrics-server/metrics-server"
LOCAL_PATH_IMAGE = "rancher/local-path-provisioner"
LOCAL_PATH_NAMESPACE = "local-path-storage"
LOCAL_PATH_CLASS = "local-path"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
HEADLAMP_IMAGE = "ghcr.io/headlamp-k8s/headlamp"
HEADLAMP_NAMESPACE = "headlamp"
HEADLAMP_PORT = 4466
"""The port Headlamp's server listens on; its Service and the port-forward use the same number."""
HEADLAMP_LOGIN = "headlamp-login"
"""The ServiceAccount whose token signs in to the dashboard."""
HEADLAMP_TOKEN_SECRET = f"{HEADLAMP_LOGIN}-token"
# Each access level binds the login to these ClusterRoles, one binding each (a binding's role cannot change).
HEADLAMP_CLUSTER_READER = "kvm-kubeadm:headlamp-cluster-reader"
HEADLAMP_ROLES = {"read-only": ("view", HEADLAMP_CLUSTER_READER), "cluster-admin": ("cluster-admin",)}
# What a dashboard shows beyond `view`, Kubernetes' read-only role for namespaced resources, which
# leaves out Secrets on purpose (reading them hands out ServiceAccount tokens) and RBAC.
CLUSTER_SCOPED_READS = [
    ("", ["nodes", "persistentvolumes", "namespaces"]),
    ("storage.k8s.io", ["storageclasses", "csidrivers", "csinodes", "volumeattachments"]),
    ("metrics.k8s.io", ["nodes", "pods"]),
    ("apiextensions.k8s.io", ["customresourcedefinitions"]),
    ("scheduling.k8s.io", ["priorityclasses"]),
    ("node.k8s.io", ["runtimeclasses"]),
    ("networking.k8s.io", ["ingressclasses"]),
]
READ = ["get", "list", "watch"]


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def metrics_server_manifest_url(settings: Settings) -> str:
    return versioned(settings.mirrors.metrics_server_manifest, settings.addons.metrics_server_version)


def metrics_server_kustomization(settings: Settings) -> str:
    """Over the release manifest: kubelets' serving certificates are self-signed, so metrics-server
    does not verify them (README: Addons); its image follows `mirrors.imageRepository`."""
    insecure_tls = [{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--kubelet-insecure-tls"}]
    kustomization: dict[str, Any] = {
        **KUSTOMIZATION,
        "resources": ["components.yaml"],
        "patches": [{"target": {"kind": "Deployment", "name": "metrics-server"}, "patch": yaml.safe_dump(insecure_tls)}],
    }
    repository = settings.mirrors.image_repository
    if repository != IMAGE_REPOSITORY_UPSTREAM:
        # Another repository holds it flat, as kubeadm asks such a repository for coredns.
        kustomization["images"] = [{"name": METRICS_SERVER_IMAGE, "newName": f"{repository}/metrics-server"}]
    return _dump(kustomization)


def local_path_manifest_url(settings: Settings) -> str:
    return versioned(settings.mirrors.local_path_manifest, settings.addons.local_path_version)


def local_path_helper_pod(settings: Settings) -> dict[str, Any]:
    """The pod that makes and removes a volume's directory. Upstream's runs `busybox` (its latest);
    the provisioner's own image carries a shell too, and is pinned and mirrored already."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "helper-pod",
                "image": f"{LOCAL_PATH_IMAGE}:{settings.addons.local_path_version}",
                "imagePullPolicy": "IfNotPresent",
            }],
        },
    }


def local_path_kustomization(settings: Settings) -> str:
    """Over the release manifest: the default StorageClass, volumes under `addons.localPathDir`, and the helper pod."""
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [settings.addons.local_path_dir]}]}
    storage_class = {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {DEFAULT_CLASS: "true"}},
    }
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "local-path-config", "namespace": LOCAL_PATH_NAMESPACE},
        "data": {"config.json": json.dumps(config, indent=2), "helperPod.yaml": _dump(local_path_helper_pod(settings))},
    }
    return _dump({
        **KUSTOMIZATION,
        "resources": ["local-path-storage.yaml"],
        "patches": [{"patch": _dump(storage_class)}, {"patch": _dump(config_map)}],
    })


def _binding_name(role: str) -> str:
    return f"{HEADLAMP_LOGIN}:{role}"


def headlamp_bindings(access: str) -> list[str]:
    """The ClusterRoleBindings of the login at this access level."""
    return [_binding_name(role) for role in HEADLAMP_ROLES[access]]


def headlamp_stale_bindings(access: str) -> list[str]:
    """The login's bindings of the other access levels, which a change of level removes."""
    ours = set(headlamp_bindings(access))
    return sorted({_binding_name(role) for roles in HEADLAMP_ROLES.values() for role in roles} - ours)


def headlamp_documents(settings: Settings) -> list[dict[str, Any]]:
    """Headlamp in its own namespace: the server, its Service, the login ServiceAccount with its
    long-lived token and its role bindings."""
    addons = settings.addons
    labels = {"app.kubernetes.io/name": "headlamp"}

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": HEADLAMP_NAMESPACE, "labels": labels}

    probe = {"httpGet": {"path": "/", "port": HEADLAMP_PORT}, "periodSeconds": 10, "timeoutSeconds": 10,
             "failureThreshold": 6}
    container = {
        "name": "headlamp",
        "image": f"{HEADLAMP_IMAGE}:{addons.headlamp_version}",
        "imagePullPolicy": "IfNotPresent",
        "args": ["-in-cluster", "-plugins-dir=/headlamp/plugins"],
        "ports": [{"name": "http", "containerPort": HEADLAMP_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 30},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 100, "runAsGroup": 101, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    port: dict[str, Any] = {"name": "http", "port": HEADLAMP_PORT, "targetPort": "http"}
    service_spec: dict[str, Any] = {"selector": labels, "ports": [port]}
    if addons.headlamp_node_port is not None:
        service_spec["type"] = "NodePort"
        port["nodePort"] = addons.headlamp_node_port
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HEADLAMP_NAMESPACE, "labels": labels}},
        # The server's own account needs no rights: every request carries the signed-in user's token.
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("headlamp")},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(HEADLAMP_LOGIN)},
        {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {**meta(HEADLAMP_TOKEN_SECRET), "annotations": {"kubernetes.io/service-account.name": HEADLAMP_LOGIN}},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": HEADLAMP_CLUSTER_READER, "labels": labels},
            "rules": [{"apiGroups": [group], "resources": resources, "verbs": READ} for group, resources in CLUSTER_SCOPED_READS],
        },
    ]
    documents += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": _binding_name(role), "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": HEADLAMP_LOGIN, "namespace": HEADLAMP_NAMESPACE}],
        }
        for role in HEADLAMP_ROLES[addons.headlamp_access]
    ]
    documents += [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("headlamp"), "spec": service_spec},
        {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("headlamp"),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"serviceAccountName": "headlamp", "nodeSelector": {"kubernetes.io/os": "linux"},
                             "containers": [container]},
                },
            },
        },
    ]
    return documents


HEADLAMP_FILE = "headlamp.yaml"


def headlamp_manifest(settings: Settings) -> str:
    return yaml.safe_dump_all(headlamp_documents(settings), sort_keys=False)


def headlamp_kustomization() -> str:
    """The manifest as the only resource, so that removing the addon is `kubectl delete -k` as for the others."""
    return _dump({**KUSTOMIZATION, "resources": [HEADLAMP_FILE]})


def headlamp_url(settings: Settings) -> str:
    """Where a browser on the KVM host opens the dashboard."""
    port = settings.addons.headlamp_node_port
    if port is None:
        return f"http://localhost:{HEADLAMP_PORT}/"
    # `firewall: open-ports` opens the NodePort range only where workloads run (procedure.WORKLOAD_PORTS).
    closed_on_control_plane = settings.firewall == "open-ports" and not settings.control_plane_schedulable
    node = settings.workers[0] if closed_on_control_plane else settings.control_plane
    return f"http://{node.ip}:{port}/"


def headlamp_port_forward(settings: Settings) -> str | None:
    """The command that makes `headlamp_url` answer, through the exported kubeconfig; None with a NodePort."""
    if settings.addons.headlamp_node_port is not None:
        return None
    kubeconfig = f"~/.kube/kvm-{settings.stack}.conf"
    return (
        f"mkdir -p ~/.kube && (umask 077 && pulumi stack output kubeconfig --show-secrets > {kubeconfig}) && "
        f"kubectl --kubeconfig {kubeconfig} "
        f"-n {HEADLAMP_NAMESPACE} port-forward service/headlamp {HEADLAMP_PORT}:{HEADLAMP_PORT}"
    )
