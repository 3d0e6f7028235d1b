"""One KVM virtual machine: copy-on-write root volume, cloud-init seed, domain, SSH connection."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import remote

from providers.sizing_guard import SizingGuard

from . import cloudinit
from .config import Image, NodeSpec, SshLogin, libvirt_name
from .network import Network

GIB = 1024**3
# SSH comes up tens of seconds after the DHCP lease (more under software emulation);
# dial attempts are bounded so that nothing waits forever on a VM that is gone.
SSH_DIAL_ERROR_LIMIT = 60
SSH_PER_DIAL_TIMEOUT_SECONDS = 10


def kernel_cmdline(cmdline: str) -> list[dict[str, str]]:
    """A kernel command line in the form the libvirt provider reads back, so that a
    second `pulumi up` sees no change: it sorts the arguments, groups `key=value`
    pairs into maps (a repeated key starts a new one) and puts the flags last,
    space-joined under "_". (The kernel thus sees the arguments sorted.)"""
    maps: list[dict[str, str]] = []
    flags = []
    for word in sorted(shlex.split(cmdline)):
        key, has_value, value = word.partition("=")
        if not has_value:
            flags.append(word)
        elif not maps or key in maps[-1]:
            maps.append({key: value})
        else:
            maps[-1][key] = value
    return maps + ([{"_": " ".join(flags)}] if flags else [])


@dataclass(frozen=True)
class VmPlatform:
    """What every node VM of one cluster shares."""

    stack: str
    """Prefix of every libvirt object name, so that stacks never collide on a host."""
    pool: str
    """Storage pool of the volumes."""
    base_volume: pulumi.Input[str]
    """The volume under each copy-on-write root disk: the base OS image, or the prepared image."""
    base_is_prepared: bool
    """Whether it is the prepared image, which follows the cluster's inputs (see Node)."""
    image: Image
    """Boot options of the base image (direct kernel boot or not)."""
    network: Network
    """The node network, which hands out the fixed addresses."""
    dns_domain: str
    """DNS domain of the node network."""
    ssh: SshLogin
    """Login created by cloud-init and used by every stage."""
    seed_dir: Path
    """Where the cloud-init seed images are written before upload."""
    boot_timeout_seconds: int
    """How long creating a VM waits for its DHCP lease."""


@dataclass(frozen=True)
class ResizeOptIn:
    """A resize replaces the VM; for this node only with the user's opt-in."""

    allowed: bool
    """The user's opt-in."""
    config_prefix: str
    """The config keys that size the node, named in the refusal."""


@dataclass(frozen=True)
class NodeArgs:
    """One VM: its name, address and sizing, on the cluster's platform."""

    spec: NodeSpec
    """Name, fixed address, vCPUs, memory and disk."""
    platform: VmPlatform
    """What it shares with the other nodes."""
    resize_opt_in: Optional[ResizeOptIn] = None
    """Set when a resize must be asked for explicitly (the control plane)."""
    boots_after: tuple[pulumi.Resource, ...] = ()
    """What the VM waits for before it boots (a joining control plane: its turn)."""


class Node(pulumi.ComponentResource):
    """A cluster VM at its fixed address; later stages reach it through `connection`."""

    name: str
    """Hostname and Kubernetes node name."""
    ip: str
    """Fixed address on the node subnet."""
    connection: remote.ConnectionArgs
    """SSH connection (private key secret, bounded dial retries)."""
    root_volume: libvirt.Volume
    """Copy-on-write root disk on the shared base image."""
    domain: libvirt.Domain
    """The libvirt domain."""

    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kvm:infra:Node", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec, platform = args.spec, args.platform
        self.name = spec.name
        self.ip = str(spec.ip)

        self.root_volume = libvirt.Volume(
            f"{name}-root",
            name=libvirt_name(platform.stack, f"{spec.name}-root.qcow2"),
            pool=platform.pool,
            base_volume_id=platform.base_volume,
            format="qcow2",
            size=spec.disk_gib * GIB,
            # A new prepared image (a version change, say) is for new nodes: a node keeps its disk
            # and follows the upgrade procedure. The old image stays in the pool under it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["base_volume_id"] if platform.base_is_prepared else None),
        )
        seed = cloudinit.Seed(
            hostname=spec.name,
            domain=platform.dns_domain,
            instance_id=libvirt_name(platform.stack, spec.name),
            ssh_user=platform.ssh.user,
            ssh_public_key=platform.ssh.public_key,
            install_guest_agent=not platform.base_is_prepared,
        )
        # A plain volume, not a libvirt.CloudInitDisk: reading one of those back downloads
        # it, and a download can hang or truncate when others run (go-libvirt streams).
        seed_volume = libvirt.Volume(
            f"{name}-cloudinit",
            name=libvirt_name(platform.stack, f"{spec.name}-cloudinit.iso"),
            pool=platform.pool,
            source=str(cloudinit.write_seed_image(seed, platform.seed_dir)),
            format="iso",  # what libvirt's pool probe reads back, so a second `up` sees no change
            # cloud-init acts on first boot only; a new seed would replace the VM for nothing.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["source"]),
        )
        lease = platform.network.lease(spec.name, self.ip)
        image = platform.image
        # A new size replaces the domain; for some nodes that needs the user's opt-in.
        guard = [
            SizingGuard(
                f"{name}-sizing", spec.name, spec.vcpu, spec.memory_mib,
                allow_replace=args.resize_opt_in.allowed,
                config_prefix=args.resize_opt_in.config_prefix,
                opts=child,
            )
        ] if args.resize_opt_in else []
        self.domain = libvirt.Domain(
            f"{name}-domain",
            name=libvirt_name(platform.stack, spec.name),
            vcpu=spec.vcpu,
            memory=spec.memory_mib,
            autostart=True,
            # cloud-init finds the seed on the second disk by its label.
            disks=[libvirt.DomainDiskArgs(volume_id=self.root_volume.id), libvirt.DomainDiskArgs(volume_id=seed_volume.id)],
            network_interfaces=[
                libvirt.DomainNetworkInterfaceArgs(
                    network_id=platform.network.network_id,
                    mac=lease.mac,
                    addresses=[lease.ip],
                    hostname=lease.hostname,
                    wait_for_lease=True,
                )
            ],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_type="serial", target_port="0")],
            kernel=image.kernel,
            initrd=image.initrd,
            cmdlines=kernel_cmdline(image.cmdline) if image.kernel else None,
            opts=pulumi.ResourceOptions(
                parent=self,
                # libvirt domain names are unique: the old VM must go before its replacement.
                delete_before_replace=True,
                depends_on=[*guard, *args.boots_after],
                # Creating the domain waits for its DHCP lease, thus for most of the boot.
                custom_timeouts=pulumi.CustomTimeouts(create=f"{platform.boot_timeout_seconds}s"),
            ),
        )
        self.connection = remote.ConnectionArgs(
            host=self.ip,
            user=platform.ssh.user,
            private_key=pulumi.Output.secret(platform.ssh.private_key),
            dial_error_limit=SSH_DIAL_ERROR_LIMIT,
            per_dial_timeout=SSH_PER_DIAL_TIMEOUT_SECONDS,
        )
        self.register_outputs({"name": self.name, "ip": self.ip, "domain_id": self.domain.id})
