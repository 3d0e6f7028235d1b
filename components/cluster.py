"""The whole cluster: network, shared base image, control plane, workers, ready check."""

from __future__ import annotations

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import remote

from . import kubeadm
from .config import Settings
from .control_plane import ADMIN_KUBECONFIG, ControlPlane
from .network import Network
from .stage import stage_command
from .worker import Worker


class Cluster(pulumi.ComponentResource):
    """A kubeadm cluster on one libvirt host, as the procedure builds it by hand."""

    provider: libvirt.Provider
    """libvirt provider for `libvirt.uri`."""
    network: Network
    """The NAT network."""
    base_volume: libvirt.Volume
    """Base OS image, shared by every node's root volume."""
    control_plane: ControlPlane
    """The control-plane node."""
    workers: list[Worker]
    """The worker nodes, in config order."""
    ready: remote.Command | None
    """Every node Ready and /readyz ok (None in an os-prep-only stack)."""
    kubeconfig: pulumi.Output[str] | None
    """Admin kubeconfig (secret)."""
    join_command: pulumi.Output[str] | None
    """The procedure's `kubeadm join …` line (secret)."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kvm:kubeadm:Cluster", name, None, opts)
        # An explicit provider, so the configured URI (not ambient provider config) is used;
        # children inherit it through `providers`.
        self.provider = libvirt.Provider(f"{name}-libvirt", uri=settings.libvirt.uri, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, providers=[self.provider])
        self.network = Network(f"{name}-network", settings, opts=child)
        self.base_volume = libvirt.Volume(
            f"{name}-base",
            name=settings.libvirt_name("base.qcow2"),
            pool=settings.libvirt.pool,
            source=settings.image.source,
            format="qcow2",
            opts=child,
        )
        self.control_plane = ControlPlane(f"{name}-{settings.control_plane.name}", settings, self.network, self.base_volume, opts=child)
        self.workers = [
            Worker(f"{name}-{spec.name}", settings, spec, self.network, self.base_volume, self.control_plane, opts=child)
            for spec in settings.workers
        ]
        self.ready = self.kubeconfig = self.join_command = None
        if settings.stages == "kubernetes":
            self._ready_check(name, settings)
        self.register_outputs(
            {
                "master_ip": self.control_plane.node.ip,
                "worker_ips": [worker.node.ip for worker in self.workers],
                "kubeconfig": self.kubeconfig,
                "join_command": self.join_command,
            }
        )

    def _ready_check(self, name: str, settings: Settings) -> None:
        master = self.control_plane
        self.kubeconfig = master.kubeconfig
        self.join_command = pulumi.Output.secret(
            pulumi.Output.all(master.token, master.ca_hash).apply(lambda args: kubeadm.join_command(settings, *args))
        )
        self.ready = stage_command(
            f"{name}-ready", "ready", master.node.name, master.node.connection,
            parent=self,
            depends_on=[master.cni, *(w.join for w in self.workers), *(w.ready for w in self.workers)],
            params={
                "WAIT_FOR_NODES": [node.name for node in settings.nodes],
                "KUBECONFIG_PATH": ADMIN_KUBECONFIG,
                "CHECK_READYZ": True,
                "TIMEOUT_SECONDS": settings.kubernetes.ready_timeout_seconds,
            },
        )
