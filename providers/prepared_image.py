"""Dynamic provider for the prepared node image: a volume in the storage pool that holds what
every node installs and does not depend on the node (OS prep, containerd, the kube packages,
the images), built by a transient VM and then cloned, copy-on-write, by each node.

The volume is named by its key, a hash of everything that goes into it, and it is a cache:
the next cluster with the same inputs, in this stack or another, finds it and builds nothing,
and deleting the resource (`pulumi destroy`, a new key) leaves it in the pool, since nodes may
still be clones of it (README: Prepared node image).

The build runs on the Pulumi host with `virsh` (libvirt's client, for the stack's URI) and
`ssh`. It leaves nothing behind when it fails: the builder's domain and volumes go, and the
next `up` starts the build again.

This module is re-imported by Pulumi's dynamic-provider process: it must import cleanly in a
fresh interpreter and create no resources at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider

from providers.ssh import run_over_ssh

PREFIX = "kvm-kubeadm-prepared-"
# The builder needs the ones a node does (kubeadm preflight).
BUILDER_VCPU, BUILDER_MEMORY_MIB = 2, 2048
# The libvirt provider reads the domain type from this variable too (qemu under emulation).
DOMAIN_TYPE_VARIABLE = "TERRAFORM_LIBVIRT_TEST_DOMAIN_TYPE"
# Packages and image pulls take minutes under emulation; an hour is a hang.
SCRIPT_TIMEOUT_SECONDS = 3600
POWER_OFF_SECONDS = 300
# What the key covers: everything that goes into the image, nothing about where it is built.
KEY_INPUTS = ("base_identity", "kernel", "initrd", "cmdline", "disk_gib", "scripts")


def image_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({k: inputs[k] for k in KEY_INPUTS}, sort_keys=True).encode()).hexdigest()


def volume_name(key: str) -> str:
    return f"{PREFIX}{key[:16]}.qcow2"


def builder_mac(key: str) -> str:
    """A locally administered QEMU MAC of its own, for the builder's DHCP reservation."""
    return "52:54:00:" + ":".join(key[i:i + 2] for i in (16, 18, 20))


class Virsh:
    """`virsh` for one libvirt URI."""

    def __init__(self, uri: str):
        self.uri = uri

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True, timeout=600)
        except FileNotFoundError:
            raise RuntimeError("virsh not found: a prepared image is built with libvirt's client on the Pulumi host") from None
        if check and result.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result

    def has_volume(self, pool: str, name: str) -> bool:
        return self.run("vol-info", "--pool", pool, name, check=False).returncode == 0

    def allocation(self, pool: str, name: str) -> int:
        info = self.run("vol-info", "--bytes", "--pool", pool, name).stdout
        return int(re.search(r"Allocation:\s*(\d+)", info).group(1))


def domain_xml(name: str, props: dict[str, Any], disk: str, seed: str, mac: str) -> str:
    domain = ET.Element("domain", type=os.environ.get(DOMAIN_TYPE_VARIABLE, "kvm"))
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(BUILDER_MEMORY_MIB)
    ET.SubElement(domain, "vcpu").text = str(BUILDER_VCPU)
    boot = ET.SubElement(domain, "os")
    ET.SubElement(boot, "type").text = "hvm"
    if props.get("kernel"):
        ET.SubElement(boot, "kernel").text = props["kernel"]
        ET.SubElement(boot, "initrd").text = props["initrd"]
        ET.SubElement(boot, "cmdline").text = props["cmdline"]
    else:
        ET.SubElement(boot, "boot", dev="hd")
    # ACPI lets the guest's poweroff end the domain.
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    devices = ET.SubElement(domain, "devices")
    for volume, target, format_ in ((disk, "vda", "qcow2"), (seed, "vdb", "raw")):
        element = ET.SubElement(devices, "disk", type="volume", device="disk")
        # discard: what the guest frees (fstrim) is freed in the volume too, and left out of the image.
        ET.SubElement(element, "driver", name="qemu", type=format_, discard="unmap")
        ET.SubElement(element, "source", pool=props["pool"], volume=volume)
        ET.SubElement(element, "target", dev=target, bus="virtio")
    interface = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(interface, "source", network=props["network"])
    ET.SubElement(interface, "mac", address=mac)
    ET.SubElement(interface, "model", type="virtio")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    return ET.tostring(domain, encoding="unicode")


class Build:
    """One build of the image: the builder's domain and volumes, named after the key."""

    def __init__(self, props: dict[str, Any]):
        self.props = props
        self.virsh = Virsh(props["uri"])
        self.pool = props["pool"]
        self.domain = volume_name(props["key"]).removesuffix(".qcow2") + "-builder"
        self.disk, self.seed = f"{self.domain}.qcow2", f"{self.domain}-seed.iso"
        self.mac = builder_mac(props["key"])

    def reservation(self, change: str, check: bool = True) -> None:
        """Add or delete the builder's DHCP reservation (for the running network only). A fixed address
        that no node has: a dynamic lease could take a node's address, which the node then would not get."""
        host = f"<host mac='{self.mac}' ip='{self.props['builder_ip']}'/>"
        self.virsh.run("net-update", self.props["network"], change, "ip-dhcp-host", host, "--live", check=check)

    def remove_builder(self) -> None:
        """The builder's domain, volumes and reservation, if there: after a build, and before one (an interrupted build's)."""
        self.virsh.run("destroy", self.domain, check=False)
        self.virsh.run("undefine", self.domain, check=False)
        self.reservation("delete", check=False)
        for volume in (self.disk, self.seed):
            if self.virsh.has_volume(self.pool, volume):
                self.virsh.run("vol-delete", "--pool", self.pool, volume)

    def boot(self) -> str:
        """Start the builder and return its address once it answers over SSH."""
        props, virsh = self.props, self.virsh
        # Numbers come back from the engine as floats.
        virsh.run("vol-create-as", self.pool, self.disk, f"{int(props['disk_gib'])}G", "--format", "qcow2",
                  "--backing-vol", props["base_volume"], "--backing-vol-format", "qcow2")
        virsh.run("vol-create-as", self.pool, self.seed, str(os.path.getsize(props["seed_path"])), "--format", "raw")
        virsh.run("vol-upload", "--pool", self.pool, self.seed, props["seed_path"])
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as definition:
            definition.write(domain_xml(self.domain, props, self.disk, self.seed, self.mac))
            definition.flush()
            virsh.run("define", definition.name)
        self.reservation("add")
        virsh.run("start", self.domain)
        timeout = int(props["boot_timeout_seconds"])
        ip, deadline = props["builder_ip"], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run_over_ssh(props, ip, "true", timeout=60).returncode == 0:
                return ip
            time.sleep(5)
        raise RuntimeError(f"the prepared image's builder {self.domain} did not answer over SSH "
                           f"within {timeout} s (libvirt.bootTimeoutSeconds)")

    def run_scripts(self, ip: str) -> None:
        for script in self.props["scripts"]:
            result = run_over_ssh(self.props, ip, script, timeout=SCRIPT_TIMEOUT_SECONDS)
            if result.returncode != 0:
                stage = re.search(r"readonly STAGE=(\S+)", script).group(1)
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-40:])
                raise RuntimeError(f"the prepared image's build failed at {stage} ({result.returncode}):\n{tail}")

    def wait_for_power_off(self) -> None:
        deadline = time.monotonic() + POWER_OFF_SECONDS
        while self.virsh.run("domstate", self.domain).stdout.strip() != "shut off":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the prepared image's builder {self.domain} did not power off within {POWER_OFF_SECONDS} s")
            time.sleep(5)

    def run(self, name: str) -> None:
        """Build the image into volume `name`: a flat copy of the sealed builder's disk, so that
        it outlives the stack's base volume under the builder."""
        self.remove_builder()
        try:
            ip = self.boot()
            self.run_scripts(ip)
            self.wait_for_power_off()
            with tempfile.NamedTemporaryFile("w", suffix=".xml") as definition:
                definition.write(f"<volume><name>{name}</name><target><format type='qcow2'/></target></volume>")
                definition.flush()
                self.virsh.run("vol-create-from", self.pool, definition.name, self.disk, "--inputpool", self.pool)
        finally:
            self.remove_builder()


class PreparedImageProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        name, virsh = volume_name(props["key"]), Virsh(props["uri"])
        built = not virsh.has_volume(props["pool"], name)
        if built:
            Build(props).run(name)
        volume = virsh.run("vol-key", "--pool", props["pool"], name).stdout.strip()
        return CreateResult(id_=name, outs={
            **props, "name": name, "volume": volume, "size_bytes": virsh.allocation(props["pool"], name), "built": built,
        })

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A new key is a new image (the old one stays, as a cache); where it is built from changes nothing.
        changed = olds.get("key") != news.get("key")
        return DiffResult(changes=changed, replaces=["key"] if changed else [], delete_before_replace=False)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Kept in the pool: a cache for the next cluster, and the base of any node still cloned from it.
        return None


class PreparedImage(pulumi.dynamic.Resource):
    """The prepared node image for a set of build inputs (see KEY_INPUTS)."""

    volume: pulumi.Output[str]
    """The volume's key in the pool (its path): the base of every node's root volume."""
    size_bytes: pulumi.Output[int]
    """What it occupies in the pool."""
    built: pulumi.Output[bool]
    """Whether this resource's creation built it (False: it was there, from an earlier cluster)."""

    def __init__(self, name: str, inputs: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            PreparedImageProvider(), name,
            {**inputs, "key": image_key(inputs), "name": None, "volume": None, "size_bytes": None, "built": None},
            opts,
        )
