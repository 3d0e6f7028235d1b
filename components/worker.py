"""A worker node and its stages: OS prep, packages, join, ready; drain and reset on removal."""

from __future__ import annotations

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import remote

from . import kubeadm
from .config import NodeSpec, Settings
from .control_plane import ControlPlane
from .network import Network
from .node import Node
from .prep import NodeStages
from .stage import stage_command

WORKER_PORTS = ("10250/tcp", "10256/tcp", "30000:32767/tcp", "8472/udp")
DRAIN_TIMEOUT_SECONDS = 300
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"


class Worker(pulumi.ComponentResource):
    """`k8sworkerN`: the VM, then `kubeadm join` with the control plane's token and CA hash."""

    node: Node
    """The worker VM."""
    stages: NodeStages
    """os-prep and packages."""
    join: remote.Command | None
    """kubeadm join (None in an os-prep-only stack); deleting it runs kubeadm reset."""
    ready: remote.Command | None
    """Waits until this node is Ready; on timeout shows its kubelet journal."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        spec: NodeSpec,
        network: Network,
        base_volume: libvirt.Volume,
        control_plane: ControlPlane,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("kvm:kubeadm:Worker", name, None, opts)
        self.node = Node(f"{name}-node", settings, spec, network, base_volume, opts=pulumi.ResourceOptions(parent=self))
        self.stages = NodeStages(name, settings, self.node, WORKER_PORTS, self)
        self.join = self.ready = None
        if settings.stages == "kubernetes":
            self._join(name, settings, spec, control_plane)
        self.register_outputs({"ip": self.node.ip})

    def _join(self, name: str, settings: Settings, spec: NodeSpec, control_plane: ControlPlane) -> None:
        node, master = self.node, control_plane.node
        # On a full destroy the whole cluster goes: no reset, no drain, just delete the VMs.
        cluster_goes_too = master.domain
        self.join = stage_command(
            f"{name}-join", "join", node.name, node.connection,
            parent=self, depends_on=[self.stages.last, *control_plane.join_prerequisites],
            stdin=pulumi.Output.all(control_plane.token, control_plane.ca_hash).apply(
                lambda args: kubeadm.join_config(settings, spec, args[0], args[1])
            ),
            # A refreshed token must not touch a worker that has joined already.
            ignore_changes=["stdin"],
            triggers=[node.root_volume.id],
            delete_stage=("reset", {}),
            deleted_with=cluster_goes_too,
        )
        # Runs on the control plane and depends on the join, so on removal it is
        # deleted first: drain and delete the Node, then reset, then the VM.
        stage_command(
            f"{name}-membership", None, master.name, master.connection,
            parent=self, depends_on=[self.join],
            delete_stage=("remove-node", {"TARGET_NODE": spec.name, "DRAIN_TIMEOUT_SECONDS": DRAIN_TIMEOUT_SECONDS}),
            deleted_with=cluster_goes_too,
        )
        self.ready = stage_command(
            f"{name}-ready", "ready", node.name, node.connection,
            parent=self, depends_on=[self.join, control_plane.cni],
            params={
                "WAIT_FOR_NODES": [spec.name],
                "KUBECONFIG_PATH": KUBELET_KUBECONFIG,
                "CHECK_READYZ": False,
                "TIMEOUT_SECONDS": settings.kubernetes.ready_timeout_seconds,
            },
        )
