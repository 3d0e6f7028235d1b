"""kubeadm config files (v1beta4) and the flannel kustomization, built with pyyaml.

The token-free documents are kept apart from the token, so that a token
refresh changes only the secret stdin of a stage and never its triggers.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Any

import yaml

from .config import Kubernetes, NodeSpec, Settings
from .config_schema import (
    ETCD_HEALTH_CHECK_TIMEOUT, LEADER_ELECTION_RENEW_DEADLINE, LIVENESS_PROBE_FAILURE_THRESHOLD, READINESS_PROBE_PERIOD,
)

KUBEADM_API = "kubeadm.k8s.io/v1beta4"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
API_SERVER_PORT = 6443
# Where haproxy serves the API on every control plane, behind the VIP: each node's API server
# holds 6443 on all its addresses, the VIP's too.
LOAD_BALANCER_PORT = 8443
# Where a control plane's etcd member talks to the others (kubeadm's constants.EtcdListenPeerPort).
ETCD_PEER_PORT = 2380
# kubeadm's default wait for a static pod replaced by an upgrade (constants.UpgradeManifestsTimeout).
UPGRADE_MANIFESTS_TIMEOUT = 300
# kubeadm's upgrade health check that runs a Job (phases/upgrade/health.go): the plan runs it.
CHECKED_BY_THE_UPGRADE_PLAN = "CreateJob"
# Where the init and upgrade-apply stages put the patches that kubeadm applies to its static pods.
PATCHES_DIR = "/etc/kubernetes/kvm-kubeadm-patches"
# kubeadm's static pods, and whether each has a readiness probe besides its liveness probe.
STATIC_POD_HAS_READINESS_PROBE = {"kube-apiserver": True, "kube-controller-manager": False, "kube-scheduler": True, "etcd": True}
FLANNEL_IMAGES = {
    # Images as the upstream manifests name them, across the releases that moved registries.
    "flannel": ("ghcr.io/flannel-io/flannel", "docker.io/flannel/flannel"),
    "flannel-cni-plugin": ("ghcr.io/flannel-io/flannel-cni-plugin", "docker.io/flannel/flannel-cni-plugin"),
}


def api_endpoint(settings: Settings) -> str:
    """The cluster's `controlPlaneEndpoint`: the VIP's load balancer, or without a VIP the leader's API server."""
    if settings.vip is not None:
        return f"{settings.vip}:{LOAD_BALANCER_PORT}"
    return f"{settings.control_plane.ip}:{API_SERVER_PORT}"


def api_service_ip(kubernetes: Kubernetes) -> IPv4Address:
    """The `kubernetes` Service's address: the first of the service CIDR, as the API server assigns it."""
    return next(kubernetes.service_cidr.hosts())


def _node_registration(node: NodeSpec) -> dict[str, Any]:
    return {
        "name": node.name,
        "criSocket": CRI_SOCKET,
        # The node's fixed address, not whatever the default route or hostname lookup gives.
        "kubeletExtraArgs": [{"name": "node-ip", "value": str(node.ip)}],
    }


def _control_plane_registration(settings: Settings, node: NodeSpec) -> dict[str, Any]:
    registration = _node_registration(node)
    if settings.control_plane_schedulable:
        registration["taints"] = []  # an empty list removes the control-plane taint
    return registration


def _local_api_endpoint(node: NodeSpec) -> dict[str, Any]:
    return {"advertiseAddress": str(node.ip), "bindPort": API_SERVER_PORT}


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def init_timeouts(kubernetes: Kubernetes) -> dict[str, str]:
    return {
        "controlPlaneComponentHealthCheck": _duration(kubernetes.control_plane_timeout_seconds),
        "kubeletHealthCheck": _duration(kubernetes.kubelet_timeout_seconds),
        "kubernetesAPICall": _duration(kubernetes.api_call_timeout_seconds),
    }


def join_timeouts(kubernetes: Kubernetes) -> dict[str, str]:
    return {
        "kubeletHealthCheck": _duration(kubernetes.kubelet_timeout_seconds),
        "discovery": _duration(kubernetes.join_timeout_seconds),
        "tlsBootstrap": _duration(kubernetes.join_timeout_seconds),
        "kubernetesAPICall": _duration(kubernetes.api_call_timeout_seconds),
    }


def static_pod_patches(kubernetes: Kubernetes) -> dict[str, str]:
    """kubeadm patches (file name: strategic merge patch) that give the static pods the configured
    probes; none where kubeadm's own probes are kept."""
    probes: dict[str, dict[str, int]] = {}
    if kubernetes.liveness_probe_failure_threshold != LIVENESS_PROBE_FAILURE_THRESHOLD:
        probes["livenessProbe"] = {"failureThreshold": kubernetes.liveness_probe_failure_threshold}
    if kubernetes.readiness_probe_period_seconds != READINESS_PROBE_PERIOD:
        probes["readinessProbe"] = {"periodSeconds": kubernetes.readiness_probe_period_seconds}
    patches = {}
    for component, has_readiness_probe in STATIC_POD_HAS_READINESS_PROBE.items():
        # A patch must not give a component a probe it lacks: one without a handler is invalid.
        changed = {name: probe for name, probe in probes.items() if has_readiness_probe or name != "readinessProbe"}
        if changed:
            container = {"name": component, **changed}
            patches[f"{component}+strategic.yaml"] = yaml.safe_dump({"spec": {"containers": [container]}}, sort_keys=False)
    return patches


def _patches(kubernetes: Kubernetes) -> dict[str, Any]:
    """The `patches` setting of a kubeadm configuration, when there are patches."""
    return {"patches": {"directory": PATCHES_DIR}} if static_pod_patches(kubernetes) else {}


def init_documents(settings: Settings) -> list[dict[str, Any]]:
    """InitConfiguration (without bootstrap tokens), ClusterConfiguration and KubeletConfiguration."""
    control_plane = settings.control_plane
    cluster: dict[str, Any] = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "controlPlaneEndpoint": api_endpoint(settings),
        "imageRepository": settings.mirrors.image_repository,
        "networking": {
            "serviceSubnet": str(settings.kubernetes.service_cidr),
            "podSubnet": str(settings.kubernetes.pod_cidr),
        },
    }
    renew_deadline = settings.kubernetes.leader_election_renew_deadline_seconds
    if renew_deadline > LEADER_ELECTION_RENEW_DEADLINE:
        lease = [
            {"name": "leader-elect-renew-deadline", "value": _duration(renew_deadline)},
            {"name": "leader-elect-lease-duration", "value": _duration(renew_deadline * 3 // 2)},
        ]
        cluster["controllerManager"] = {"extraArgs": lease}
        cluster["scheduler"] = {"extraArgs": lease}
    etcd_check = settings.kubernetes.etcd_health_check_timeout_seconds
    if etcd_check > ETCD_HEALTH_CHECK_TIMEOUT:
        cluster["apiServer"] = {"extraArgs": [{"name": "etcd-healthcheck-timeout", "value": _duration(etcd_check)}]}
    if settings.kubernetes.version.count(".") == 2:
        # With MAJOR.MINOR only, kubeadm uses its own (pinned) version.
        cluster["kubernetesVersion"] = f"v{settings.kubernetes.version}"
    return [
        {
            "apiVersion": KUBEADM_API,
            "kind": "InitConfiguration",
            "localAPIEndpoint": _local_api_endpoint(control_plane),
            "nodeRegistration": _control_plane_registration(settings, control_plane),
            "timeouts": init_timeouts(settings.kubernetes),
            **_patches(settings.kubernetes),
        },
        cluster,
        {"apiVersion": KUBELET_API, "kind": "KubeletConfiguration", "cgroupDriver": "systemd"},
    ]


def upgrade_config(kubernetes: Kubernetes, control_plane: bool = False) -> str:
    """The UpgradeConfiguration of `kubeadm upgrade plan|apply|node`: the configured timeouts and patches.
    The version goes on the command line: with MAJOR.MINOR, the node's kubeadm names it.

    An upgrade waits for each new static pod (its mirror pod's hash, then the pod) under
    `upgradeManifests`, not `controlPlaneComponentHealthCheck`: the configured control-plane
    wait covers it too, never shorter than kubeadm's own default."""
    timeouts = {
        **init_timeouts(kubernetes),
        "upgradeManifests": _duration(max(kubernetes.control_plane_timeout_seconds, UPGRADE_MANIFESTS_TIMEOUT)),
    }
    # The upgrade-apply stage runs `upgrade plan` first, asking again while kubeadm's health-check
    # Job misses its fixed 60 s; `upgrade apply` would run that Job once more, so it skips it.
    # `upgrade apply` writes the control plane's static pods anew: with the same patches as init.
    apply = {"ignorePreflightErrors": [CHECKED_BY_THE_UPGRADE_PLAN], **_patches(kubernetes)}
    upgrade = {"apiVersion": KUBEADM_API, "kind": "UpgradeConfiguration", "apply": apply, "timeouts": timeouts}
    if control_plane:
        # `upgrade node` on a joined control plane writes its static pods anew, with the patches its join had.
        upgrade["node"] = _patches(kubernetes)
    return dump_all([upgrade])


def dump_all(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def init_config(settings: Settings, token: str) -> str:
    """The init config file, with the bootstrap token (secret).

    kubeadm refuses `expires` next to the `ttl` it defaults, so the lifetime is the
    configured TTL from init; the provider's recorded expiry, from the token's
    creation moments earlier, is the earlier of the two and drives renewal.
    """
    documents = init_documents(settings)
    documents[0] = {
        **documents[0],
        "bootstrapTokens": [
            {
                "token": token,
                "ttl": f"{settings.kubernetes.token_ttl_hours}h0m0s",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            }
        ],
    }
    return dump_all(documents)


def _join_document(endpoint: str, token: str, ca_hash: str) -> dict[str, Any]:
    return {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": endpoint,
                "token": token,
                "caCertHashes": [ca_hash],
            }
        },
    }


def join_config(endpoint: str, node: NodeSpec, kubernetes: Kubernetes, token: str, ca_hash: str) -> str:
    """The JoinConfiguration of a worker (secret: token and CA hash)."""
    document = _join_document(endpoint, token, ca_hash)
    return dump_all([{**document, "nodeRegistration": _node_registration(node), "timeouts": join_timeouts(kubernetes)}])


def control_plane_join_config(settings: Settings, node: NodeSpec, token: str, ca_hash: str, certificate_key: str) -> str:
    """The JoinConfiguration of a control plane that joins the leader's cluster (secret: token, CA hash and the
    key that decrypts the control-plane certificates in the kubeadm-certs Secret)."""
    document = _join_document(api_endpoint(settings), token, ca_hash)
    return dump_all([{
        **document,
        "nodeRegistration": _control_plane_registration(settings, node),
        "controlPlane": {"localAPIEndpoint": _local_api_endpoint(node), "certificateKey": certificate_key},
        # Its own control plane comes up as the leader's did, and its etcd member must catch up.
        "timeouts": {
            **join_timeouts(settings.kubernetes),
            "controlPlaneComponentHealthCheck": _duration(settings.kubernetes.control_plane_timeout_seconds),
            "etcdAPICall": _duration(settings.kubernetes.etcd_api_call_timeout_seconds),
        },
        **_patches(settings.kubernetes),
    }])


def join_command(endpoint: str, token: str, ca_hash: str) -> str:
    """The procedure's join line, for people; the stages use join_config."""
    return f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {ca_hash}"


def flannel_net_conf(settings: Settings) -> dict[str, Any]:
    return {"Network": str(settings.kubernetes.pod_cidr), "EnableNFTables": False, "Backend": {"Type": "vxlan"}}


def flannel_kustomization(settings: Settings) -> str:
    """Kustomization over the fetched manifest: pod CIDR always, image registry when mirrored."""
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["kube-flannel.yml"],
        "patches": [
            {
                "target": {"kind": "ConfigMap", "name": "kube-flannel-cfg"},
                "patch": yaml.safe_dump(
                    [
                        {
                            "op": "replace",
                            "path": "/data/net-conf.json",
                            "value": json.dumps(flannel_net_conf(settings), indent=2),
                        }
                    ],
                    sort_keys=False,
                ),
            }
        ],
    }
    registry = settings.mirrors.flannel_registry
    if registry:
        kustomization["images"] = [
            {"name": upstream, "newName": f"{registry}/{name}"}
            for name, upstreams in FLANNEL_IMAGES.items()
            for upstream in upstreams
        ]
    return yaml.safe_dump(kustomization, sort_keys=False)
