"""The whole cluster: network, shared base image, control plane, workers, ready check."""

from __future__ import annotations

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import remote

from providers.kubernetes_version import KubernetesVersion

from . import kubeadm, procedure
from .config import Settings, libvirt_name
from .control_plane import ControlPlane
from .network import Network, NetworkArgs
from .node import NodeArgs, ResizeOptIn, VmPlatform
from .rollout import Rollout
from .stage import Host, StageContext, in_scope, run_stages
from .worker import Worker


class Cluster(pulumi.ComponentResource):
    """A kubeadm cluster on one libvirt host, as the procedure builds it by hand."""

    kubernetes_version: KubernetesVersion | None
    """The version the cluster was last set to; plans or refuses a change (None in an os-prep-only stack)."""
    provider: libvirt.Provider
    """libvirt provider for `libvirt.uri`."""
    network: Network
    """The NAT network."""
    base_volume: libvirt.Volume
    """Base OS image, shared by every node's root volume."""
    control_planes: list[ControlPlane]
    """The control-plane nodes; the first, the leader, runs kubeadm init."""
    workers: list[Worker]
    """The worker nodes, in config order."""
    stages: dict[str, remote.Command]
    """The cluster-wide stages (procedure.CLUSTER), run on the leader."""
    kubeconfig: pulumi.Output[str] | None
    """Admin kubeconfig (secret; None in an os-prep-only stack)."""
    join_command: pulumi.Output[str] | None
    """The procedure's `kubeadm join …` line (secret)."""
    headlamp_token: pulumi.Output[str] | None
    """The dashboard login's ServiceAccount token (secret; None without the Headlamp addon)."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kvm:kubeadm:Cluster", name, None, opts)
        # First, so that a refused version change stops the deployment before any stage
        # runs: every Kubernetes stage waits for it.
        self.kubernetes_version = None
        if in_scope("kubernetes", settings.scope):
            self.kubernetes_version = KubernetesVersion(
                f"{name}-kubernetes-version",
                version=settings.kubernetes.version,
                control_plane=settings.control_plane.name,
                workers=[worker.name for worker in settings.workers],
                concurrency=settings.kubernetes.upgrade_concurrency,
                config_key=f"{settings.project}:kubernetes.version",
                opts=pulumi.ResourceOptions(parent=self),
            )
        # An explicit provider, so the configured URI (not ambient provider config) is used;
        # children inherit it through `providers`.
        self.provider = libvirt.Provider(f"{name}-libvirt", uri=settings.libvirt.uri, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, providers=[self.provider])
        self.network = Network(
            f"{name}-network",
            NetworkArgs(
                libvirt_name=libvirt_name(settings.stack, settings.network.name),
                subnet=settings.network.subnet,
                domain=settings.network.domain,
                hosts={node.name: str(node.ip) for node in settings.nodes},
                mac_seed=settings.stack,
            ),
            opts=child,
        )
        self.base_volume = libvirt.Volume(
            f"{name}-base",
            name=libvirt_name(settings.stack, "base.qcow2"),
            pool=settings.libvirt.pool,
            source=settings.image.source,
            format="qcow2",
            opts=child,
        )
        platform = VmPlatform(
            stack=settings.stack,
            pool=settings.libvirt.pool,
            base_volume=self.base_volume,
            image=settings.image,
            network=self.network,
            dns_domain=settings.network.domain,
            ssh=settings.ssh,
            seed_dir=settings.work_dir / "cloud-init",
            boot_timeout_seconds=settings.libvirt.boot_timeout_seconds,
        )
        spec = settings.control_plane
        version = self.kubernetes_version
        leader = ControlPlane(
            f"{name}-{spec.name}", settings,
            NodeArgs(spec, platform, ResizeOptIn(settings.allow_control_plane_replace, f"{settings.project}:controlPlane")),
            Rollout(version) if version else None,
            opts=child,
        )
        self.control_planes = [leader]
        # The rollout: each worker after the one `upgradeConcurrency` places ahead (the first ones after the control plane).
        self.workers = []
        ahead = settings.kubernetes.upgrade_concurrency
        for index, worker in enumerate(settings.workers):
            turn = self.workers[index - ahead] if index >= ahead else leader
            rollout = Rollout(version, (turn.stages[procedure.UPGRADED],)) if version else None
            self.workers.append(
                Worker(f"{name}-{worker.name}", settings, NodeArgs(worker, platform), leader.ticket, rollout, opts=child)
            )
        provided: dict[str, list[pulumi.Resource]] = {
            procedure.WORKERS: [w.stages[stage] for w in self.workers for stage in ("join", "ready") if stage in w.stages],
        }
        if leader.ticket is not None:
            provided[procedure.POD_NETWORK] = [leader.ticket.pod_network]
        context = StageContext(
            settings, spec, Host(leader.node.name, leader.node.connection), leader.node.root_volume.id,
            lifeline=leader.node.domain,
        )
        self.stages = run_stages(procedure.CLUSTER, name, context, provided, parent=self)

        self.kubeconfig = self.join_command = self.headlamp_token = None
        if "headlamp" in self.stages:
            self.headlamp_token = pulumi.Output.secret(self.stages["headlamp"].stdout.apply(str.strip))
        if leader.ticket is not None:
            ticket = leader.ticket
            self.kubeconfig = leader.kubeconfig
            self.join_command = pulumi.Output.secret(
                pulumi.Output.all(ticket.token, ticket.ca_hash).apply(lambda args: kubeadm.join_command(ticket.endpoint, *args))
            )
        self.register_outputs(
            {
                "control_plane_ip": leader.node.ip,
                "worker_ips": [worker.node.ip for worker in self.workers],
                "kubeconfig": self.kubeconfig,
                "join_command": self.join_command,
                "headlamp_token": self.headlamp_token,
            }
        )

    @property
    def leader(self) -> ControlPlane:
        """The control plane that bootstrapped the cluster."""
        return self.control_planes[0]
