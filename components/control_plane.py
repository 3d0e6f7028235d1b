"""The control-plane node and its stages: OS prep, packages, kubeadm init, CA hash,
bootstrap token, flannel and the admin kubeconfig."""

from __future__ import annotations

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import remote

from providers.bootstrap_token import BootstrapToken

from . import kubeadm
from .config import Settings
from .network import Network
from .node import Node
from .prep import NodeStages
from .stage import stage_command

CONTROL_PLANE_PORTS = ("6443/tcp", "2379:2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp", "8472/udp")
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"


class ControlPlane(pulumi.ComponentResource):
    """`k8smaster`: the VM, then kubeadm init and what the workers need to join."""

    node: Node
    """The control-plane VM."""
    stages: NodeStages
    """os-prep and packages."""
    init: remote.Command | None
    """kubeadm init (None in an os-prep-only stack)."""
    token: pulumi.Output[str] | None
    """Bootstrap token (secret)."""
    ca_hash: pulumi.Output[str] | None
    """`sha256:<hex>` of the cluster CA's public key (secret)."""
    join_prerequisites: list[pulumi.Resource]
    """What every join waits for: init, the registered token and the CA hash."""
    cni: remote.Command | None
    """flannel applied and rolled out."""
    kubeconfig: pulumi.Output[str] | None
    """Admin kubeconfig (secret); its server is the control plane's address."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        network: Network,
        base_volume: libvirt.Volume,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("kvm:kubeadm:ControlPlane", name, None, opts)
        spec = settings.control_plane
        self.node = Node(
            f"{name}-node", settings, spec, network, base_volume,
            guard_sizing=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.stages = NodeStages(name, settings, self.node, CONTROL_PLANE_PORTS, self)
        self.init = self.token = self.ca_hash = self.cni = self.kubeconfig = None
        self.join_prerequisites = []
        if settings.stages == "kubernetes":
            self._bootstrap(name, settings)
        self.register_outputs({"ip": self.node.ip, "kubeconfig": self.kubeconfig, "ca_hash": self.ca_hash})

    def _bootstrap(self, name: str, settings: Settings) -> None:
        node, ttl = self.node, settings.kubernetes.token_ttl_hours * 3600
        token = BootstrapToken(
            f"{name}-bootstrap-token", ttl_seconds=ttl, renew_before_seconds=ttl // 4,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.token = pulumi.Output.secret(token.token)
        self.init = stage_command(
            f"{name}-init", "init", node.name, node.connection,
            parent=self, depends_on=[self.stages.last, token],
            params={"SSH_USER": settings.ssh.user},
            stdin=self.token.apply(lambda value: kubeadm.init_config(settings, value)),
            # The config carries the token: a refreshed token must not re-run init,
            # while a change to the cluster settings themselves should.
            ignore_changes=["stdin"],
            triggers=[kubeadm.dump_all(kubeadm.init_documents(settings)), node.root_volume.id],
        )
        ca_hash = stage_command(
            f"{name}-ca-hash", "ca-hash", node.name, node.connection,
            parent=self, depends_on=[self.init], params={"CA_CERT": "/etc/kubernetes/pki/ca.crt"},
            secret_stdout=True,
        )
        self.ca_hash = pulumi.Output.secret(ca_hash.stdout.apply(str.strip))
        registration = stage_command(
            f"{name}-token", "token", node.name, node.connection,
            parent=self, depends_on=[self.init],
            stdin=pulumi.Output.all(self.token, token.expires_epoch).apply(lambda args: f"{args[0]}\n{args[1]}\n"),
        )
        self.join_prerequisites = [self.init, registration, ca_hash]
        self.cni = stage_command(
            f"{name}-cni", "cni", node.name, node.connection,
            parent=self, depends_on=[self.init],
            params={
                "MANIFEST_URL": settings.flannel.manifest_url,
                "KUSTOMIZATION": kubeadm.flannel_kustomization(settings),
                "TIMEOUT_SECONDS": settings.kubernetes.ready_timeout_seconds,
            },
        )
        kubeconfig = stage_command(
            f"{name}-kubeconfig", "kubeconfig", node.name, node.connection,
            parent=self, depends_on=[self.init], secret_stdout=True,
        )
        self.kubeconfig = pulumi.Output.secret(kubeconfig.stdout)
