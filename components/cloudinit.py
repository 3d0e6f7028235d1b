"""cloud-init documents for a node, built with pyyaml from Python data."""

from __future__ import annotations

import yaml

from .config import NodeSpec, Settings


def user_data(settings: Settings, node: NodeSpec) -> str:
    """#cloud-config: hostname, the SSH user with its key and sudo, qemu-guest-agent."""
    document = {
        "hostname": node.name,
        "fqdn": f"{node.name}.{settings.network.domain}",
        "prefer_fqdn_over_hostname": False,
        # The OS-prep stage owns /etc/hosts (the node's name maps to its fixed address).
        "manage_etc_hosts": False,
        "users": [
            {
                "name": settings.ssh.user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [settings.ssh.public_key],
            }
        ],
        "ssh_pwauth": False,
        "packages": ["qemu-guest-agent"],
        "runcmd": [["systemctl", "enable", "--now", "qemu-guest-agent"]],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def meta_data(settings: Settings, node: NodeSpec) -> str:
    return yaml.safe_dump({"instance-id": settings.libvirt_name(node.name), "local-hostname": node.name}, sort_keys=False)
