"""The whole cluster: network, shared base image, control plane, workers, ready check."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import remote

from providers.certificate_expiry import CertificateExpiry
from providers.etcd_snapshot import EtcdSnapshot
from providers.kubernetes_version import KubernetesVersion
from providers.prepared_image import PreparedImage

from . import cloudinit, kubeadm, procedure
from .config import Settings, libvirt_name
from .control_plane import ControlPlane
from .network import Network, NetworkArgs
from .node import NodeArgs, ResizeOptIn, VmPlatform
from .rollout import Rollout
from .stage import SSH_OPTIONS, Host, StageContext, in_scope, run_stages
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
    """Base OS image, shared by every node's root volume (or, with `image.prepared`, under the prepared image's build)."""
    prepared_image: PreparedImage | None
    """The prepared node image every node is cloned from (None without `image.prepared`)."""
    control_planes: list[ControlPlane]
    """The control-plane nodes; the first, the leader, runs kubeadm init."""
    workers: list[Worker]
    """The worker nodes, in config order."""
    certificates: CertificateExpiry | None
    """The control planes' certificate check and renewal, on every `up` (None in an os-prep-only stack)."""
    stages: dict[str, remote.Command]
    """The cluster-wide stages (procedure.CLUSTER), run on the leader."""
    etcd_snapshot: EtcdSnapshot | None
    """The newest etcd snapshot kept on the KVM host (None unless `snapshots.everyUp` or `snapshots.trigger`)."""
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
            # A cluster without a VIP records neither, so that its record stays as it was.
            with_vip = settings.vip is not None
            self.kubernetes_version = KubernetesVersion(
                f"{name}-kubernetes-version",
                version=settings.kubernetes.version,
                control_plane=settings.control_plane.name,
                workers=[worker.name for worker in settings.workers],
                concurrency=settings.kubernetes.upgrade_concurrency,
                config_key=f"{settings.project}:kubernetes.version",
                control_planes=[node.name for node in settings.joining_control_planes] if with_vip else None,
                endpoint=kubeadm.api_endpoint(settings) if with_vip else None,
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
        self.prepared_image = None
        if settings.image.prepared:
            self.prepared_image = PreparedImage(
                f"{name}-prepared-image", prepared_image_inputs(settings, self.base_volume, self.network),
                # A refused version change builds nothing.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.kubernetes_version] if self.kubernetes_version else None),
            )
        platform = VmPlatform(
            stack=settings.stack,
            pool=settings.libvirt.pool,
            base_volume=self.prepared_image.volume if self.prepared_image else self.base_volume.id,
            base_is_prepared=self.prepared_image is not None,
            image=settings.image,
            network=self.network,
            dns_domain=settings.network.domain,
            ssh=settings.ssh,
            seed_dir=settings.work_dir / "cloud-init",
            boot_timeout_seconds=settings.libvirt.boot_timeout_seconds,
        )
        spec = settings.control_plane
        version = self.kubernetes_version
        resize = ResizeOptIn(settings.allow_control_plane_replace, f"{settings.project}:controlPlane")
        leader = ControlPlane(
            f"{name}-{spec.name}", settings, NodeArgs(spec, platform, resize),
            Rollout(version) if version else None,
            opts=child,
        )
        self.control_planes = [leader]
        # One at a time, each after the one before: its join after that one's etcd member is healthy (the
        # first after the leader's pod network: until then the leader is busy, as a real run showed), its
        # upgrade after that one's.
        for joining in settings.joining_control_planes:
            before = self.control_planes[-1]
            settled = before.stages.get("etcd-member") or before.stages.get("cni")
            self.control_planes.append(ControlPlane(
                f"{name}-{joining.name}", settings, NodeArgs(joining, platform, resize),
                Rollout(version, (before.stages[procedure.UPGRADED],)) if version else None,
                joins=leader.ticket, turn=(settled,) if settled else (),
                opts=child,
            ))
        last = self.control_planes[-1]
        ticket = leader.ticket
        if ticket is not None and last is not leader:
            # Workers join once every control plane has.
            ticket = dataclasses.replace(ticket, prerequisites=(*ticket.prerequisites, last.stages["etcd-member"]))
        # The rollout: each worker after the one `upgradeConcurrency` places ahead (the first ones after the last control plane).
        self.workers = []
        ahead = settings.kubernetes.upgrade_concurrency
        for index, worker in enumerate(settings.workers):
            turn = self.workers[index - ahead] if index >= ahead else last
            rollout = Rollout(version, (turn.stages[procedure.UPGRADED],)) if version else None
            self.workers.append(
                Worker(f"{name}-{worker.name}", settings, NodeArgs(worker, platform), ticket, rollout, opts=child)
            )
        provided: dict[str, list[pulumi.Resource]] = {
            procedure.JOINED_NODES: [
                node.stages[stage] for node in (*self.control_planes[1:], *self.workers)
                for stage in ("join", "ready", "etcd-member") if stage in node.stages
            ],
        }
        self.certificates = None
        if leader.ticket is not None:
            provided[procedure.POD_NETWORK] = [leader.ticket.pod_network]
            # After every control plane is up at the configured version: an upgrade renews the certificates.
            self.certificates = CertificateExpiry(
                f"{name}-certificate-expiry", certificate_expiry_inputs(settings),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[
                    node.stages[stage] for node in self.control_planes
                    for stage in (procedure.UPGRADED, "etcd-member") if stage in node.stages
                ]),
            )
            provided[procedure.CERTIFICATES] = [self.certificates]
        context = StageContext(
            settings, spec, Host(leader.node.name, leader.node.connection), leader.node.root_volume.id,
            lifeline=leader.node.domain, certificates=self.certificates,
        )
        self.stages = run_stages(procedure.CLUSTER, name, context, provided, parent=self)
        self.etcd_snapshot = None
        if self.certificates is not None and (settings.snapshots.every_up or settings.snapshots.trigger):
            self.etcd_snapshot = EtcdSnapshot(
                f"{name}-etcd-snapshot", etcd_snapshot_inputs(settings),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.stages["ready"]]),
            )

        self.kubeconfig = self.join_command = self.headlamp_token = None
        if "headlamp" in self.stages:
            self.headlamp_token = pulumi.Output.secret(self.stages["headlamp"].stdout.apply(str.strip))
        if leader.ticket is not None:
            ticket = leader.ticket
            self.kubeconfig = pulumi.Output.secret(self.stages["kubeconfig"].stdout)
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
                "certificates_expire": self.certificates.earliest if self.certificates else None,
                "prepared_image": self.prepared_image.volume if self.prepared_image else None,
            }
        )

    @property
    def leader(self) -> ControlPlane:
        """The control plane that bootstrapped the cluster."""
        return self.control_planes[0]


def base_identity(source: str) -> str:
    """What tells one base image from another: a URL as it is, a local file by its path, size and time."""
    if "://" in source:
        return source
    stat = Path(source).expanduser().stat()
    return f"{source} {stat.st_size} {stat.st_mtime_ns}"


def builder_address(settings: Settings) -> IPv4Address:
    """The prepared image's builder's address: the subnet's last that no node and no VIP has."""
    taken = {node.ip for node in settings.nodes} | ({settings.vip} if settings.vip else set())
    return next(ip for ip in reversed(list(settings.network.subnet.hosts())) if ip not in taken)


def ssh_login(settings: Settings) -> dict:
    """How a dynamic provider logs in to the nodes (providers/ssh.py)."""
    return {
        "ssh_user": settings.ssh.user,
        "private_key_path": str(settings.ssh.private_key_path.expanduser()),
        "ssh_options": list(SSH_OPTIONS),
    }


def certificate_expiry_inputs(settings: Settings) -> dict:
    """The certificate check's commands for each control plane, the renewal window and wait, and the SSH login."""
    return {
        "nodes": procedure.certificates_commands(settings),
        "renew_before_days": settings.certificates.renew_before_days,
        # The renewal's wait for the restarted static pods (scripts/certificates.sh's TIMEOUT_SECONDS).
        "renew_wait_seconds": settings.kubernetes.control_plane_timeout_seconds,
        # `kubeadm upgrade apply` and `upgrade node` renew them: checked again after a version change.
        "version": settings.kubernetes.version,
        **ssh_login(settings),
    }


def etcd_snapshot_inputs(settings: Settings) -> dict:
    """The snapshot's script on the leader, where the host keeps the stack's snapshots, and when to take one."""
    snapshots = settings.snapshots
    return {
        "command": procedure.etcd_snapshot_command(settings),
        "node": settings.control_plane.name,
        "ip": str(settings.control_plane.ip),
        "directory": str(Path(snapshots.directory).expanduser() / settings.stack),
        "keep": snapshots.keep,
        "trigger": snapshots.trigger,
        "every_up": snapshots.every_up,
        **ssh_login(settings),
    }


def prepared_image_inputs(settings: Settings, base_volume: libvirt.Volume, network: Network) -> dict:
    """The prepared image's build, from the stack's base volume on the node network (providers/prepared_image.py)."""
    seed = cloudinit.Seed(
        hostname=procedure.PREPARED_IMAGE_BUILDER, domain=settings.network.domain,
        instance_id=libvirt_name(settings.stack, procedure.PREPARED_IMAGE_BUILDER),
        ssh_user=settings.ssh.user, ssh_public_key=settings.ssh.public_key,
    )
    image = settings.image
    return {
        "base_identity": base_identity(image.source),
        "kernel": image.kernel, "initrd": image.initrd, "cmdline": image.cmdline,
        # Every node's disk is at least as big as the image under it.
        "disk_gib": min(node.disk_gib for node in settings.nodes),
        "scripts": procedure.prepared_image_scripts(settings),
        "uri": settings.libvirt.uri,
        "pool": settings.libvirt.pool,
        "network": network.network.name,
        "builder_ip": str(builder_address(settings)),
        "base_volume": base_volume.id,
        "seed_path": str(cloudinit.write_seed_image(seed, settings.work_dir / "cloud-init")),
        **ssh_login(settings),
        "boot_timeout_seconds": settings.libvirt.boot_timeout_seconds,
    }
