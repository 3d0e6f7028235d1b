"""cloud-init seed for a node: NoCloud documents built with pyyaml, in an ISO 9660 image."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import yaml

SEED_LABEL = "cidata"  # the volume label cloud-init's NoCloud datasource looks for


@dataclass(frozen=True)
class Seed:
    """What a node's first boot sets up."""

    hostname: str
    """Hostname (and Kubernetes node name)."""
    domain: str
    """DNS domain of the node network, for the FQDN."""
    instance_id: str
    """cloud-init instance id: unique per stack and node."""
    ssh_user: str
    """Login user, with passwordless sudo."""
    ssh_public_key: str
    """The user's authorised key."""
    install_guest_agent: bool = True
    """Install qemu-guest-agent at first boot; False where the image has it (a prepared image): installing
    means an `apt-get update` first, which on a prepared image's mirror sources fetches every index."""


def user_data(seed: Seed) -> str:
    """#cloud-config: hostname, the SSH user with its key and sudo, qemu-guest-agent (installed unless the image has it)."""
    document = {
        "hostname": seed.hostname,
        "fqdn": f"{seed.hostname}.{seed.domain}",
        "prefer_fqdn_over_hostname": False,
        # The OS-prep stage owns /etc/hosts (the node's name maps to its fixed address).
        "manage_etc_hosts": False,
        "users": [
            {
                "name": seed.ssh_user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [seed.ssh_public_key],
            }
        ],
        "ssh_pwauth": False,
        **({"packages": ["qemu-guest-agent"]} if seed.install_guest_agent else {}),
        "runcmd": [["systemctl", "enable", "--now", "qemu-guest-agent"]],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def meta_data(seed: Seed) -> str:
    return yaml.safe_dump({"instance-id": seed.instance_id, "local-hostname": seed.hostname}, sort_keys=False)


def write_seed_image(seed: Seed, directory: Path) -> Path:
    """Write the node's NoCloud seed (user-data, meta-data) as an ISO 9660 image in
    `directory` and return its path; the libvirt provider uploads it."""
    documents = {"user-data": user_data(seed), "meta-data": meta_data(seed)}
    path = directory / f"{seed.hostname}.iso"
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
