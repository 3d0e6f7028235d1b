"""The procedure: for each role, the stages it runs in order, what each waits for,
and its parameters. Adding a stage is one script under scripts/ and one entry here.

Besides earlier stages of the same role, a stage may wait for what its role provides:
  VM                  the node's libvirt domain (every node role)
  BOOTSTRAP_TOKEN     the bootstrap token resource (the control plane that runs init)
  JOIN_PREREQUISITES  the control plane's JoinTicket.prerequisites (a joining node)
  POD_NETWORK         flannel rolled out (a joining node, the cluster)
  JOINED_NODES        every worker's join and ready stages, every joining control plane's etcd-member
                      stage (the cluster)
  KUBERNETES_VERSION  the resource that plans or refuses a version change (every node)
  ROLLOUT_TURN        the upgrade that finishes before this node's (a worker, a joining control plane)
  CONTROL_PLANE_TURN  the control plane that joins before this one, its etcd member healthy; for the
                      first, the leader's pod network rolled out (a joining control plane)
  CERTIFICATES        the control planes' certificates checked, and renewed where due (the cluster)

The upgrade stages run only when their inputs change, never when created: a new
node installs the configured version, so only a version change gives them work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pulumi
import yaml

from providers import etcd_snapshot

from . import addons, kubeadm, load_balancer, registries
from .config import NodeSpec, Settings
from .scripts import Value, as_root, render
from .stage import ON_CONTROL_PLANE, ON_NODE_IF_REACHABLE, ON_NODE_WITH_HOST_FILE, Host, Stage, StageContext, Undo, in_scope

VM = "vm"
BOOTSTRAP_TOKEN = "bootstrap-token"
JOIN_PREREQUISITES = "join-prerequisites"
POD_NETWORK = "pod-network"
JOINED_NODES = "joined-nodes"
KUBERNETES_VERSION = "kubernetes-version"
ROLLOUT_TURN = "rollout-turn"
CONTROL_PLANE_TURN = "control-plane-turn"
CERTIFICATES = "certificates"
# Not a stage: the script providers/etcd_snapshot.py runs on the leader.
ETCD_SNAPSHOT = "etcd-snapshot"
# A control plane's own API server, as its stages ask it whether it is ready.
LOCAL_API_READYZ_URL = f"https://127.0.0.1:{kubeadm.API_SERVER_PORT}/readyz"

CONTROL_PLANE_PORTS = ("6443/tcp", "2379:2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp", "8472/udp")
# What a node that runs workloads serves besides: kube-proxy's health check and the NodePort range.
WORKLOAD_PORTS = ("10256/tcp", "30000:32767/tcp")
WORKER_PORTS = ("10250/tcp", *WORKLOAD_PORTS, "8472/udp")
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
# A node's last upgrade stage: once it is done, the node is Ready at the configured version.
UPGRADED = "uncordon"
# The control plane's stages that a joining node waits for, and that make its JoinTicket.
# A node that joins during a version change waits for the upgraded control plane:
# a kubelet must never be newer than the API server.
JOIN_NEEDS = ("init", "token", "ca-hash", UPGRADED)


def os_prep_params(settings: Settings, ip: str, ports: tuple[str, ...]) -> dict[str, Value]:
    return {
        "NODE_IP": ip,
        "DNS_DOMAIN": settings.network.domain,
        "FIREWALL": settings.firewall,
        "FIREWALL_PORTS": list(ports),
        "NODE_IDENTITY": True,
    }


def kube_packages_params(settings: Settings) -> dict[str, Value]:
    return {
        "KUBE_VERSION": settings.kubernetes.version,
        "KUBE_REPO": f"{settings.mirrors.kube_packages}/v{settings.kubernetes.minor}/deb/",
    }


def packages_params(settings: Settings) -> dict[str, Value]:
    registry_files = registries.certs_d_files(settings.registries)
    return {
        **kube_packages_params(settings),
        "IMAGE_REPOSITORY": settings.mirrors.image_repository,
        "OS_APT_MIRROR": settings.mirrors.os_apt,
        "CONTAINERD_SOURCE": settings.containerd.source,
        "CONTAINERD_VERSION": settings.containerd.version,
        "CONTAINERD_REPO": f"{settings.mirrors.containerd_packages}/linux",
        "CERTS_D_PATHS": list(registry_files),
        "CERTS_D_FILES": list(registry_files.values()),
    }


def ready_params(settings: Settings, nodes: list[str], kubeconfig: str, check_readyz: bool) -> dict[str, Value]:
    return {
        "WAIT_FOR_NODES": nodes,
        "KUBECONFIG_PATH": kubeconfig,
        "CHECK_READYZ": check_readyz,
        "TIMEOUT_SECONDS": settings.kubernetes.ready_timeout_seconds,
    }


def init_settings(settings: Settings) -> str:
    """The cluster settings init applies: its documents without the token and the version. A new
    version on a live cluster is the upgrade stages' work; the init stage would only skip."""
    documents = kubeadm.init_documents(settings)
    for document in documents:
        document.pop("kubernetesVersion", None)
    return kubeadm.dump_all(documents)


def init_config_stdin(context: StageContext) -> pulumi.Output[str]:
    """The init config with the bootstrap token (secret): what init reads, and a restore's kubeadm init."""
    return context.bootstrap_token.token.apply(lambda token: kubeadm.init_config(context.settings, token))


def static_pod_patches_params(settings: Settings) -> dict[str, Value]:
    """The kubeadm patches, as file name and content pairs, and the directory the kubeadm config names."""
    patches = kubeadm.static_pod_patches(settings.kubernetes)
    return {"PATCHES_DIR": kubeadm.PATCHES_DIR, "PATCHES": [part for patch in patches.items() for part in patch]}


def upgrade_params(settings: Settings, control_plane: bool = False) -> dict[str, Value]:
    """What kubeadm upgrade reads; the version, so that a change runs the stage."""
    return {
        "KUBE_VERSION": settings.kubernetes.version,
        "UPGRADE_CONFIG": kubeadm.upgrade_config(settings.kubernetes, control_plane),
    }


def load_balancer_params(settings: Settings, node: NodeSpec) -> dict[str, Value]:
    return {
        "NODE_IP": str(node.ip),
        "VIP": str(settings.vip),
        "LOAD_BALANCER_PORT": kubeadm.LOAD_BALANCER_PORT,
        "INTERFACE_MARK": load_balancer.INTERFACE,
        "HAPROXY_CONFIG_FILE": load_balancer.HAPROXY_CONFIG,
        "HAPROXY_CONFIG": load_balancer.haproxy_config(settings),
        "KEEPALIVED_CONFIG_FILE": load_balancer.KEEPALIVED_CONFIG,
        "KEEPALIVED_CONFIG": load_balancer.keepalived_config(settings, node),
        "CHECK_SCRIPT_FILE": load_balancer.CHECK_SCRIPT,
        "CHECK_SCRIPT": load_balancer.check_script(),
        "TIMEOUT_SECONDS": settings.kubernetes.ready_timeout_seconds,
    }


def drain_params(context: StageContext) -> dict[str, Value]:
    return {
        "KUBE_VERSION": context.settings.kubernetes.version,
        "TARGET_NODE": context.node.name,
        "DRAIN_TIMEOUT_SECONDS": context.settings.kubernetes.drain_timeout_seconds,
    }


def uncordon_params(context: StageContext) -> dict[str, Value]:
    return {
        "KUBE_VERSION": context.settings.kubernetes.version,
        "TARGET_NODE": context.node.name,
        "TIMEOUT_SECONDS": context.settings.kubernetes.ready_timeout_seconds,
    }


def new_root_disk(context: StageContext) -> list[pulumi.Input]:
    """A new root disk is a new OS: run the stage again."""
    return [context.root_disk]


def control_plane_ports(settings: Settings) -> tuple[str, ...]:
    """A schedulable control plane serves workloads too, so `firewall: open-ports` opens their ports on it."""
    return CONTROL_PLANE_PORTS + (WORKLOAD_PORTS if settings.control_plane_schedulable else ())


def os_prep(ports: Callable[[Settings], tuple[str, ...]]) -> Stage:
    return Stage(
        "os-prep", after=(VM,), scope="os-prep", reruns_on=new_root_disk,
        params=lambda c: os_prep_params(c.settings, str(c.node.ip), ports(c.settings)),
    )


PACKAGES = Stage(
    "packages", after=("os-prep", KUBERNETES_VERSION), reruns_on=new_root_disk, params=lambda c: packages_params(c.settings),
)

# keepalived and haproxy on every control plane of a cluster with a VIP, before its init or join.
LOAD_BALANCER = Stage(
    "load-balancer", after=("packages",), wanted=lambda s: s.vip is not None, reruns_on=new_root_disk,
    params=lambda c: load_balancer_params(c.settings, c.node),
)


def upgrade_kubeadm(after: tuple[str, ...]) -> Stage:
    return Stage(
        "upgrade-kubeadm", after=(*after, KUBERNETES_VERSION), params=lambda c: kube_packages_params(c.settings),
        on_change_only=True,
    )


UPGRADE_KUBELET = Stage(
    "upgrade-kubelet", after=("drain",), params=lambda c: {"KUBE_VERSION": c.settings.kubernetes.version}, on_change_only=True,
)

CONTROL_PLANE = (
    os_prep(control_plane_ports),
    PACKAGES,
    LOAD_BALANCER,
    # A new leader from a snapshot of the host: the restore runs kubeadm init, and init finds it done.
    Stage(
        "restore", after=("packages", "load-balancer", BOOTSTRAP_TOKEN), runs_on=ON_NODE_WITH_HOST_FILE,
        wanted=lambda s: bool(s.snapshots.restore_from),
        params=lambda c: {
            "PKI_FILES": list(etcd_snapshot.PKI_FILES), "ETCD_PEER_URL": etcd_peer_url(c.node),
            **static_pod_patches_params(c.settings),
        },
        stdin=init_config_stdin,
        host_file=lambda c: str(Path(c.settings.snapshots.restore_from).expanduser()),
        keeps_stdin=True, reruns_on=lambda c: [c.settings.snapshots.restore_from, c.root_disk],
    ),
    Stage(
        "init", after=("packages", "load-balancer", BOOTSTRAP_TOKEN, "restore"),
        params=lambda c: {"SSH_USER": c.settings.ssh.user, **static_pod_patches_params(c.settings)},
        stdin=init_config_stdin,
        # The config carries the token: a refreshed token must not re-run init,
        # while a change to the cluster settings themselves should.
        keeps_stdin=True,
        reruns_on=lambda c: [init_settings(c.settings), c.root_disk],
    ),
    Stage("ca-hash", after=("init",), params=lambda c: {"CA_CERT": "/etc/kubernetes/pki/ca.crt"}, secret_stdout=True),
    Stage(
        "token", after=("init",),
        stdin=lambda c: pulumi.Output.all(c.bootstrap_token.token, c.bootstrap_token.expires_epoch).apply(
            lambda args: f"{args[0]}\n{args[1]}\n"
        ),
    ),
    Stage(
        "cni", after=("init",),
        params=lambda c: {
            "MANIFEST_URL": c.settings.flannel.manifest_url,
            "API_SERVICE_URL": f"https://{kubeadm.api_service_ip(c.settings.kubernetes)}:443",
            "KUSTOMIZATION": kubeadm.flannel_kustomization(c.settings),
            "TIMEOUT_SECONDS": c.settings.kubernetes.ready_timeout_seconds,
        },
    ),
    # A version change, as kubeadm's "Upgrading kubeadm clusters" does it, control plane first.
    upgrade_kubeadm(after=("init",)),
    Stage(
        "upgrade-apply", after=("upgrade-kubeadm",), on_change_only=True,
        params=lambda c: {
            **upgrade_params(c.settings), **static_pod_patches_params(c.settings),
            "IMAGE_REPOSITORY": c.settings.mirrors.image_repository,
        },
    ),
    Stage("drain", after=("upgrade-apply",), params=drain_params, on_change_only=True),
    UPGRADE_KUBELET,
    Stage("uncordon", after=("upgrade-kubelet",), params=uncordon_params, on_change_only=True),
)

# On removal, `kubeadm reset` on the joined node; one whose VM is already gone
# is skipped with a warning, so that removing it from the config still works.
RESET = Stage("reset", after=("join",), creates=False, runs_on=ON_NODE_IF_REACHABLE, undo=Undo("reset"), skipped_on_cluster_destroy=True)


def membership(undo: Undo) -> Stage:
    """Runs on the leader after the reset entry, so on removal it is deleted first: `undo` (drain and
    delete the Node), then the reset, then the VM."""
    return Stage("membership", after=("reset",), creates=False, runs_on=ON_CONTROL_PLANE, undo=undo,
                 skipped_on_cluster_destroy=True)


def upgrade_by_upgrade_node(control_plane: bool) -> tuple[Stage, ...]:
    """A version change on a joined node, after the one ahead in the rollout: `kubeadm upgrade node`,
    drained and uncordoned from the leader."""
    return (
        upgrade_kubeadm(after=("join", ROLLOUT_TURN)),
        Stage("upgrade-node", after=("upgrade-kubeadm",), params=lambda c: upgrade_params(c.settings, control_plane),
              on_change_only=True),
        Stage("drain", after=("upgrade-node",), runs_on=ON_CONTROL_PLANE, params=drain_params, on_change_only=True),
        UPGRADE_KUBELET,
        Stage("uncordon", after=("upgrade-kubelet",), runs_on=ON_CONTROL_PLANE, params=uncordon_params, on_change_only=True),
    )


WORKER = (
    os_prep(lambda _: WORKER_PORTS),
    PACKAGES,
    Stage(
        "join", after=("packages", JOIN_PREREQUISITES),
        params=lambda c: {"API_URL": f"https://{c.ticket.endpoint}", "TIMEOUT_SECONDS": c.settings.kubernetes.join_timeout_seconds},
        stdin=lambda c: pulumi.Output.all(c.ticket.token, c.ticket.ca_hash).apply(
            lambda args: kubeadm.join_config(c.ticket.endpoint, c.node, c.settings.kubernetes, args[0], args[1])
        ),
        # A refreshed token must not touch a worker that has joined already.
        keeps_stdin=True,
        reruns_on=new_root_disk,
    ),
    RESET,
    membership(Undo("remove-node", lambda c: {
        "TARGET_NODE": c.node.name, "DRAIN_TIMEOUT_SECONDS": c.settings.kubernetes.drain_timeout_seconds,
    })),
    Stage(
        "ready", after=("join", POD_NETWORK),
        params=lambda c: ready_params(c.settings, [c.node.name], KUBELET_KUBECONFIG, check_readyz=False),
    ),
    # A version change: after the control plane, and after the worker ahead in the rollout is Ready.
    *upgrade_by_upgrade_node(control_plane=False),
)


def etcd_peer_url(node: NodeSpec) -> str:
    return f"https://{node.ip}:{kubeadm.ETCD_PEER_PORT}"


def etcd_member_params(context: StageContext) -> dict[str, Value]:
    """What scripts/helpers/etcd.sh needs to remove the node's etcd member; etcd may take as long to
    answer as kubeadm's own etcd calls may."""
    return {"LEADER": context.settings.control_plane.name, "ETCD_PEER_URL": etcd_peer_url(context.node),
            "ETCD_ANSWER_SECONDS": context.settings.kubernetes.etcd_api_call_timeout_seconds}


# A control plane that joins the leader's cluster behind the VIP: one at a time, each once the one
# before has a healthy etcd member, as parallel joins fail with "etcd leader changed".
JOINING_CONTROL_PLANE = (
    os_prep(control_plane_ports),
    PACKAGES,
    LOAD_BALANCER,
    # kubeadm join reads them from the directory the JoinConfiguration names.
    Stage("static-pod-patches", after=("packages",), reruns_on=new_root_disk, params=lambda c: static_pod_patches_params(c.settings)),
    # On the leader, just before the join: the control-plane certificates in the kubeadm-certs Secret,
    # encrypted with the certificate key, afresh for its two hours.
    Stage(
        "upload-certs", after=(JOIN_PREREQUISITES, CONTROL_PLANE_TURN), runs_on=ON_CONTROL_PLANE,
        params=lambda _: {"KUBEADM_API": kubeadm.KUBEADM_API},
        stdin=lambda c: c.ticket.certificate_key.apply(lambda key: f"{key}\n"), reruns_on=new_root_disk,
    ),
    Stage(
        "join", script="join-control-plane", after=("load-balancer", "static-pod-patches", "upload-certs"),
        params=lambda c: {
            "API_URL": f"https://{c.ticket.endpoint}", "TIMEOUT_SECONDS": c.settings.kubernetes.join_timeout_seconds,
            **etcd_member_params(c),
        },
        stdin=lambda c: pulumi.Output.all(c.ticket.token, c.ticket.ca_hash, c.ticket.certificate_key).apply(
            lambda args: kubeadm.control_plane_join_config(c.settings, c.node, *args)
        ),
        keeps_stdin=True,
        reruns_on=new_root_disk,
    ),
    Stage(
        "etcd-member", after=("join",),
        params=lambda c: {
            # kubeadm's etcd serves /health without TLS on localhost (its --listen-metrics-urls).
            "ETCD_HEALTH_URL": "http://127.0.0.1:2381/health",
            "API_READYZ_URL": LOCAL_API_READYZ_URL,
            "TIMEOUT_SECONDS": c.settings.kubernetes.ready_timeout_seconds,
        },
    ),
    RESET,
    # On removal also its etcd member, so that the others keep their quorum without it.
    membership(Undo("remove-control-plane", lambda c: {
        "TARGET_NODE": c.node.name, **etcd_member_params(c), "DRAIN_TIMEOUT_SECONDS": c.settings.kubernetes.drain_timeout_seconds,
    })),
    # A version change: after the leader's `upgrade apply` and the control plane before, before any worker.
    *upgrade_by_upgrade_node(control_plane=True),
)



def addon(name: str, wanted: Callable[[Settings], bool], params: Callable[[Settings], dict[str, Value]],
          storage_class: str = "", secret_stdout: bool = False) -> Stage:
    """An addon: installed once every node is Ready, from /etc/kvm-kubeadm/<name> on the leader; its
    switch turned off deletes what it applied (not when the whole cluster goes)."""
    directory = f"/etc/kvm-kubeadm/{name}"

    def where(context: StageContext) -> dict[str, Value]:
        return {"ADDON_DIR": directory, "TIMEOUT_SECONDS": context.settings.kubernetes.ready_timeout_seconds}

    return Stage(
        name, after=("ready",), wanted=wanted, params=lambda c: {**where(c), **params(c.settings)},
        reruns_on=new_root_disk, secret_stdout=secret_stdout, skipped_on_cluster_destroy=True,
        undo=Undo("remove-addon", lambda c: {**where(c), "STORAGE_CLASS": storage_class}),
    )


# Run on the control plane that bootstrapped the cluster, once every node has joined.
CLUSTER = (
    # The admin kubeconfig, read again when a renewal changed the certificates in it.
    Stage("kubeconfig", after=(CERTIFICATES,), secret_stdout=True, reruns_on=lambda c: [c.certificates.earliest]),
    Stage(
        "ready", after=(POD_NETWORK, JOINED_NODES),
        params=lambda c: ready_params(c.settings, [n.name for n in c.settings.nodes], ADMIN_KUBECONFIG, check_readyz=True),
    ),
    addon(
        "metrics-server", lambda s: s.addons.metrics_server,
        lambda s: {"MANIFEST_URL": addons.metrics_server_manifest_url(s), "KUSTOMIZATION": addons.metrics_server_kustomization(s)},
    ),
    addon(
        "local-path", lambda s: s.addons.local_path,
        lambda s: {"MANIFEST_URL": addons.local_path_manifest_url(s), "KUSTOMIZATION": addons.local_path_kustomization(s)},
        storage_class=addons.LOCAL_PATH_CLASS,
    ),
    # Its stdout is the login token.
    addon(
        "headlamp", lambda s: s.addons.headlamp,
        lambda s: {
            "MANIFEST": addons.headlamp_manifest(s), "MANIFEST_FILE": addons.HEADLAMP_FILE,
            "KUSTOMIZATION": addons.headlamp_kustomization(),
            "NAMESPACE": addons.HEADLAMP_NAMESPACE, "TOKEN_SECRET": addons.HEADLAMP_TOKEN_SECRET,
            "STALE_BINDINGS": addons.headlamp_stale_bindings(s.addons.headlamp_access),
        },
        secret_stdout=True,
    ),
)

ROLES = {"control plane": CONTROL_PLANE, "joining control plane": JOINING_CONTROL_PLANE, "worker": WORKER, "cluster": CLUSTER}


def certificates_params(settings: Settings, renew: bool) -> dict[str, Value]:
    return {
        "RENEW": renew, "API_READYZ_URL": LOCAL_API_READYZ_URL,
        "STATIC_PODS": list(kubeadm.STATIC_POD_HAS_READINESS_PROBE),
        "TIMEOUT_SECONDS": settings.kubernetes.control_plane_timeout_seconds,
    }


def certificates_commands(settings: Settings) -> list[dict[str, str]]:
    """What providers/certificate_expiry.py runs on each control plane: the check, and the renewal
    (scripts/certificates.sh), each as the SSH command that runs it as root."""
    return [
        {
            "name": node.name, "ip": str(node.ip),
            **{step: as_root(render(CERTIFICATES, node.name, certificates_params(settings, renew)))
               for step, renew in (("check", False), ("renew", True))},
        }
        for node in settings.control_planes
    ]


def etcd_snapshot_command(settings: Settings) -> str:
    """What providers/etcd_snapshot.py runs on the leader: scripts/etcd-snapshot.sh as root."""
    leader = settings.control_plane.name
    return as_root(render(ETCD_SNAPSHOT, leader, {"LEADER": leader, "PKI_FILES": list(etcd_snapshot.PKI_FILES)}))


def fetched_manifests(settings: Settings) -> list[tuple[str, str]]:
    """(URL, kustomization) of every manifest the cluster's stages fetch and apply (the pod network's, the addons')."""
    context = StageContext(settings, settings.control_plane, Host(settings.control_plane.name, None), "")
    found = []
    for stage in CONTROL_PLANE + CLUSTER:
        params = stage.params(context) if stage.wanted(settings) else {}
        if "MANIFEST_URL" in params:
            found.append((params["MANIFEST_URL"], params["KUSTOMIZATION"]))
    return found


def preload_params(settings: Settings) -> dict[str, Value]:
    manifests = fetched_manifests(settings)
    return {
        "IMAGE_REPOSITORY": settings.mirrors.image_repository,
        "IMPLIED_REGISTRY": registries.IMPLIED_REGISTRY,
        "MANIFEST_URLS": [url for url, _ in manifests],
        "KUSTOMIZATIONS": [kustomization for _, kustomization in manifests],
        # The file each kustomization names as its resource.
        "MANIFEST_FILES": [yaml.safe_load(kustomization)["resources"][0] for _, kustomization in manifests],
    }


PREPARED_IMAGE_BUILDER = "image-builder"
"""The node name in the log lines of a prepared image's build."""


@dataclass(frozen=True)
class BuildStep:
    """One script of a prepared image's build."""

    script: str
    scope: str
    """The first scope (stage.SCOPES) that includes it."""
    params: Callable[[Settings], dict[str, Value]]


# What a prepared image's builder runs, in order: the procedure's part that does not depend on
# the node, up to every image in containerd, then the seal (providers/prepared_image.py).
PREPARED_IMAGE_BUILD = (
    BuildStep("os-prep", "os-prep", lambda _: {"NODE_IDENTITY": False}),
    BuildStep("packages", "kubernetes", packages_params),
    BuildStep("preload-images", "kubernetes", preload_params),
    BuildStep("seal-image", "os-prep", lambda s: {"SSH_USER": s.ssh.user}),
)


def prepared_image_scripts(settings: Settings) -> list[str]:
    """The build's scripts in the stack's scope, each as the SSH command that runs it as root."""
    return [
        as_root(render(step.script, PREPARED_IMAGE_BUILDER, step.params(settings)))
        for step in PREPARED_IMAGE_BUILD if in_scope(step.scope, settings.scope)
    ]
