"""cloud-init seed for a node: NoCloud documents built with pyyaml, in an ISO 9660 image."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import yaml

from .config import NodeSpec, Settings

SEED_LABEL = "cidata"  # the volume label cloud-init's NoCloud datasource looks for


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


def write_seed_image(settings: Settings, node: NodeSpec) -> Path:
    """Write the node's NoCloud seed (user-data, meta-data) as an ISO 9660 image under
    the stack's work dir and return its path; the libvirt provider uploads it."""
    documents = {"user-data": user_data(settings, node), "meta-data": meta_data(settings, node)}
    path = settings.work_dir / "cloud-init" / f"{node.name}.iso"
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pycdlib.PyCdlib()
    image.new(joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    try:
        for name, text in documents.items():
            data = text.encode()
            iso_name = name.replace("-", "").upper()  # plain ISO 9660 names allow no '-'
            image.add_fp(io.BytesIO(data), len(data), f"/{iso_name}.;1", rr_name=name, joliet_path=f"/{name}")
        image.write(str(path))
    finally:
        image.close()
    return path
