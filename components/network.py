"""The cluster's libvirt NAT network: node subnet, DNS names, DHCP reservations."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from .config import NodeSpec, Settings


@dataclass(frozen=True)
class Lease:
    """A node's DHCP reservation: fixed MAC, fixed address, hostname."""

    mac: str
    ip: str
    hostname: str


class Network(pulumi.ComponentResource):
    """NAT network on the node subnet, with a DNS host entry per node.

    The DHCP reservations (`lease`) are applied by the provider when each node's
    interface is created with its MAC and address. They are not put into the
    network definition: its XML hook forces a replacement on every change, which
    would re-create the network whenever a worker is added.
    """

    network: libvirt.Network
    """The libvirt network."""
    network_id: pulumi.Output[str]
    """libvirt network UUID, for domain interfaces."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kvm:infra:Network", name, None, opts)
        self._stack = settings.stack
        net = settings.network
        self.network = libvirt.Network(
            f"{name}-net",
            name=net.name,
            mode="nat",
            domain=net.domain,
            addresses=[str(net.subnet)],
            autostart=True,
            dhcp=libvirt.NetworkDhcpArgs(enabled=True),
            dns=libvirt.NetworkDnsArgs(
                enabled=True,
                local_only=True,
                hosts=[libvirt.NetworkDnsHostArgs(hostname=node.name, ip=str(node.ip)) for node in settings.nodes],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.network_id = self.network.id
        self.register_outputs({"network_id": self.network_id, "name": net.name})

    def lease(self, node: NodeSpec) -> Lease:
        """Stable per stack and node: a locally administered QEMU MAC derived from both names."""
        digest = hashlib.sha256(f"{self._stack}/{node.name}".encode()).digest()
        mac = "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])
        return Lease(mac=mac, ip=str(node.ip), hostname=node.name)
