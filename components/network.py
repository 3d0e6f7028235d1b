"""The cluster's libvirt NAT network: node subnet, DNS names, DHCP reservations."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt


@dataclass(frozen=True)
class Lease:
    """A node's DHCP reservation: fixed MAC, fixed address, hostname."""

    mac: str
    ip: str
    hostname: str


@dataclass(frozen=True)
class NetworkArgs:
    """What the network needs: its libvirt name, subnet, DNS domain and the nodes on it."""

    libvirt_name: str
    """libvirt network name (already prefixed with the stack)."""
    subnet: ipaddress.IPv4Network
    """Node subnet (NAT)."""
    domain: str
    """DNS domain served by the network's dnsmasq."""
    hosts: dict[str, str]
    """DNS host entries: node name -> fixed address."""
    mac_seed: str
    """Makes node MACs unique per stack (the stack name)."""


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

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kvm:infra:Network", name, None, opts)
        self._mac_seed = args.mac_seed
        self.network = libvirt.Network(
            f"{name}-net",
            name=args.libvirt_name,
            mode="nat",
            domain=args.domain,
            addresses=[str(args.subnet)],
            autostart=True,
            dhcp=libvirt.NetworkDhcpArgs(enabled=True),
            dns=libvirt.NetworkDnsArgs(
                enabled=True,
                local_only=True,
                hosts=[libvirt.NetworkDnsHostArgs(hostname=host, ip=ip) for host, ip in args.hosts.items()],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.network_id = self.network.id
        self.register_outputs({"network_id": self.network_id, "name": args.libvirt_name})

    def lease(self, hostname: str, ip: str) -> Lease:
        """Stable per stack and node: a locally administered QEMU MAC derived from both names."""
        digest = hashlib.sha256(f"{self._mac_seed}/{hostname}".encode()).digest()
        mac = "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])
        return Lease(mac=mac, ip=ip, hostname=hostname)
