"""Stack configuration: read once, validated in full, frozen into typed objects.

Nothing else in the program calls ``pulumi.Config``. Every problem found is
collected and reported in one ``ConfigError`` that names the config key at
fault, before any resource is registered.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pulumi
import yaml

PROJECT = "kvm-kubeadm"

UBUNTU_NOBLE_IMAGE = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
KUBE_PACKAGES_UPSTREAM = "https://pkgs.k8s.io/core:/stable:"
IMAGE_REPOSITORY_UPSTREAM = "registry.k8s.io"
DEFAULT_SUBNET = "192.168.56.0/24"  # not libvirt's own default, 192.168.122.0/24
FLANNEL_MANIFEST_UPSTREAM = "https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml"

# Mirror presets: each names only what it changes; everything else stays upstream.
MIRROR_PRESETS: dict[str, dict[str, str]] = {
    "none": {},
    "cn": {
        "kubePackages": "https://mirrors.aliyun.com/kubernetes-new/core/stable",
        "imageRepository": "registry.aliyuncs.com/google_containers",
        "osApt": "https://mirrors.aliyun.com",
    },
}

MIN_VCPU = 2  # kubeadm preflight NumCPU
MIN_MEMORY_MIB = 2048  # kubeadm preflight Mem (1700 MB, rounded up to what the procedure uses)
MIN_DISK_GIB = 10

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^(\d+)\.(\d+)(\.\d+)?$")
_PUBLIC_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")
_SSH_KEYGEN_HINT = "create a key pair with: ssh-keygen -t ed25519 -f ~/.ssh/id_ed25519 -N ''"


class ConfigError(pulumi.RunError):
    """Every problem in the stack config, one per line, each naming its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Libvirt:
    uri: str
    """libvirt connection URI of the KVM host."""
    pool: str
    """Existing storage pool that holds every volume."""
    boot_timeout_seconds: int
    """How long creating a VM waits for its DHCP lease (software emulation boots slowly)."""


@dataclass(frozen=True)
class Network:
    name: str
    """libvirt network name, prefixed with the stack."""
    subnet: ipaddress.IPv4Network
    """Node subnet (NAT)."""
    domain: str
    """DNS domain served by the network's dnsmasq."""

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """libvirt gives the host bridge the first address."""
        return self.subnet.network_address + 1


@dataclass(frozen=True)
class Image:
    source: str
    """Base OS image: a URL or a local path."""
    kernel: Optional[str] = None
    """Kernel for direct kernel boot (a path on the libvirt host), or None to boot from disk."""
    initrd: Optional[str] = None
    """initrd for direct kernel boot."""
    cmdline: str = ""
    """Kernel command line for direct kernel boot."""


@dataclass(frozen=True)
class Ssh:
    user: str
    """Login user created by cloud-init, with passwordless sudo."""
    public_key: str
    """Authorised public key (the file's content)."""
    private_key_path: Path
    """Private key that pulumi-command uses; read as a secret."""
    private_key: str = field(repr=False)
    """Private key content; never printed."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    """Hostname and Kubernetes node name."""
    ip: ipaddress.IPv4Address
    """Fixed address on the node subnet."""
    vcpu: int
    """Virtual CPUs."""
    memory_mib: int
    """Memory in MiB."""
    disk_gib: int
    """Root disk size in GiB."""


@dataclass(frozen=True)
class Mirrors:
    kube_packages: str
    """Base URL of the kube package repo; `/v<MAJOR.MINOR>/deb/` is appended."""
    image_repository: str
    """Registry for control-plane images and containerd's pause image."""
    flannel_manifest: str
    """Flannel manifest URL; `{version}` is replaced by the flannel version."""
    flannel_registry: str
    """Registry that replaces flannel's own, or "" to keep the manifest's images."""
    os_apt: str
    """OS apt mirror base URL, or "" to keep the image's sources."""


@dataclass(frozen=True)
class Kubernetes:
    version: str
    """MAJOR.MINOR or MAJOR.MINOR.PATCH."""
    service_cidr: ipaddress.IPv4Network
    """Service CIDR (the procedure's 10.96.0.0/12)."""
    pod_cidr: ipaddress.IPv4Network
    """Pod CIDR (the procedure's 10.244.0.0/16, flannel's default)."""
    token_ttl_hours: int
    """Lifetime of the bootstrap token."""
    ready_timeout_seconds: int
    """How long the ready check waits for every node."""

    @property
    def minor(self) -> str:
        """MAJOR.MINOR, the only form the pkgs.k8s.io repo path accepts."""
        major, minor = self.version.split(".")[:2]
        return f"{major}.{minor}"


@dataclass(frozen=True)
class Flannel:
    version: str
    """Flannel release tag."""
    manifest_url: str
    """Resolved manifest URL."""


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    libvirt: Libvirt
    network: Network
    image: Image
    ssh: Ssh
    control_plane: NodeSpec
    workers: tuple[NodeSpec, ...]
    control_plane_schedulable: bool
    """Remove the control-plane taint so workloads run on it."""
    allow_control_plane_replace: bool
    """Opt-in: let a sizing change replace the control-plane VM."""
    kubernetes: Kubernetes
    mirrors: Mirrors
    flannel: Flannel
    firewall: str
    """"disable" (the procedure) or "open-ports"."""
    stages: str
    """"kubernetes" (everything) or "os-prep" (VMs and OS prep only)."""
    work_dir: Path
    """Git-ignored directory for files the program generates (cloud-init seed images)."""

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return (self.control_plane, *self.workers)

    def libvirt_name(self, name: str) -> str:
        return libvirt_name(self.stack, name)


def libvirt_name(stack: str, name: str) -> str:
    """Every libvirt object is prefixed with the stack, so stacks never collide on a host."""
    return f"{stack}-{name}"


# --- reading ---------------------------------------------------------------------------

_MISSING = object()


class _Section:
    """One structured config object: typed look-ups, errors keyed by path, unknown keys reported."""

    def __init__(self, errors: list[str], path: str, raw: Any):
        self.errors = errors
        self.path = path
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(f"{path}: must be an object, got {type(raw).__name__}")
            raw = {}
        self.raw = raw
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}"

    def get(self, name: str, kind: type, default: Any = _MISSING) -> Any:
        self.read.add(name)
        if name not in self.raw:
            if default is _MISSING:
                self.errors.append(f"{self.key(name)}: required")
            return None if default is _MISSING else default
        value = self.raw[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            hint = f'; quote it: "{value}"' if kind is str and isinstance(value, (int, float)) else ""
            self.errors.append(f"{self.key(name)}: must be {kind.__name__}, got {value!r}{hint}")
            return None if default is _MISSING else default
        return value

    def get_bounded(self, name: str, default: int, minimum: int, maximum: Optional[int] = None) -> Optional[int]:
        """An integer within [minimum, maximum]; out of range is reported and read as None."""
        value = self.get(name, int, default)
        if value is not None and (value < minimum or maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.errors.append(f"{self.key(name)}: must be {bounds}, got {value}")
            return None
        return value

    def done(self) -> None:
        for unknown in sorted(set(self.raw) - self.read):
            known = ", ".join(sorted(self.read))
            self.errors.append(f"{self.key(unknown)}: unknown key (known keys: {known})")


def _parse(errors: list[str], key: str, value: Any, parser: Callable[[str], Any], what: str) -> Any:
    if value is None:
        return None
    try:
        return parser(str(value))
    except ValueError:
        errors.append(f"{key}: {value!r} is not a valid {what}")
        return None


def _read_text(path: Path) -> str:
    return path.expanduser().read_text(encoding="utf-8").strip()


def _sizing(errors: list[str], section: _Section, defaults: dict[str, int]) -> Optional[tuple[int, int, int]]:
    """(vcpu, memory MiB, disk GiB) of a node section, checked against kubeadm's minimums."""
    vcpu = section.get("vcpu", int, defaults["vcpu"])
    memory = section.get("memoryMiB", int, defaults["memoryMiB"])
    disk = section.get("diskGiB", int, defaults["diskGiB"])
    if vcpu is not None and vcpu < MIN_VCPU:
        errors.append(f"{section.key('vcpu')}: {vcpu} is below kubeadm's minimum of {MIN_VCPU}")
    if memory is not None and memory < MIN_MEMORY_MIB:
        errors.append(f"{section.key('memoryMiB')}: {memory} is below kubeadm's minimum of {MIN_MEMORY_MIB}")
    if disk is not None and disk < MIN_DISK_GIB:
        errors.append(f"{section.key('diskGiB')}: {disk} is below the minimum of {MIN_DISK_GIB}")
    return None if None in (vcpu, memory, disk) else (vcpu, memory, disk)


def _check_addresses(errors: list[str], network: Optional[Network], placed: list[tuple[str, NodeSpec]]) -> None:
    """Node IPs inside the subnet, off the network/gateway/broadcast addresses, each used once."""
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    seen_names: dict[str, str] = {}
    for key, node in placed:
        if network is not None:
            subnet = network.subnet
            if node.ip not in subnet:
                errors.append(f"{key}: {node.ip} ({node.name}) is outside the node subnet {subnet}")
            elif node.ip in (subnet.network_address, subnet.broadcast_address):
                errors.append(f"{key}: {node.ip} ({node.name}) is the network or broadcast address of {subnet}")
            elif node.ip == network.gateway:
                errors.append(f"{key}: {node.ip} ({node.name}) is the gateway address of {subnet}")
        if node.ip in seen_ips:
            errors.append(f"{key}: {node.ip} ({node.name}) is already used by {seen_ips[node.ip]}")
        seen_ips.setdefault(node.ip, node.name)
        if node.name in seen_names:
            errors.append(f"{key}: node name {node.name!r} is used twice")
        seen_names.setdefault(node.name, key)


def _other_stack_networks(project_dir: Path, stack: str) -> list[tuple[str, Any]]:
    """(stack, network config) of every other committed stack file, to catch collisions on one host."""
    found = []
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        other = path.name[len("Pulumi."):-len(".yaml")]
        if other == stack:
            continue
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        network = (document.get("config") or {}).get(f"{PROJECT}:network")
        if isinstance(network, dict):
            found.append((other, network))
    return found


def parse(raw: Mapping[str, Any], stack: str, project_dir: Path, project: str = PROJECT) -> Settings:
    """Validate the raw config values (already decoded from JSON) into Settings, or raise ConfigError."""
    errors: list[str] = []

    def section(name: str) -> _Section:
        return _Section(errors, f"{project}:{name}", raw.get(name))

    libvirt_s = section("libvirt")
    libvirt_cfg = Libvirt(
        uri=libvirt_s.get("uri", str, "qemu:///system"),
        pool=libvirt_s.get("pool", str, "default"),
        boot_timeout_seconds=libvirt_s.get_bounded("bootTimeoutSeconds", 600, minimum=60),
    )
    libvirt_s.done()

    net_s = section("network")
    net_name = net_s.get("name", str, "k8s")
    subnet = _parse(errors, net_s.key("subnet"), net_s.get("subnet", str, DEFAULT_SUBNET), ipaddress.IPv4Network, "IPv4 CIDR")
    net_domain = net_s.get("domain", str, "k8s.lan")
    net_s.done()
    if net_name is not None and not _LABEL.match(net_name):
        errors.append(f"{net_s.key('name')}: {net_name!r} must be a lowercase RFC 1123 label")
    network = Network(name=libvirt_name(stack, net_name), subnet=subnet, domain=net_domain) if subnet is not None else None

    image_s = section("image")
    image_source = image_s.get("source", str, UBUNTU_NOBLE_IMAGE)
    kernel = image_s.get("kernel", str, None)
    initrd = image_s.get("initrd", str, None)
    cmdline = image_s.get("cmdline", str, "")
    image_s.done()
    if image_source and "://" not in image_source and not Path(image_source).expanduser().is_file():
        errors.append(f"{image_s.key('source')}: {image_source!r} is neither a URL nor a readable local file")
    if (kernel is None) != (initrd is None):
        errors.append(f"{image_s.key('kernel')}: direct kernel boot needs both image.kernel and image.initrd")
    image = Image(source=image_source, kernel=kernel, initrd=initrd, cmdline=cmdline)

    ssh_s = section("ssh")
    ssh_user = ssh_s.get("user", str, "kube")
    private_path = Path(ssh_s.get("privateKeyPath", str, "~/.ssh/id_ed25519"))
    public_path = Path(ssh_s.get("publicKeyPath", str, f"{private_path}.pub"))
    ssh_s.done()
    if ssh_user is not None and not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", ssh_user):
        errors.append(f"{ssh_s.key('user')}: {ssh_user!r} is not a valid Linux user name")
    public_key = private_key = ""
    try:
        public_key = _read_text(public_path)
        if not _PUBLIC_KEY.match(public_key):
            errors.append(f"{ssh_s.key('publicKeyPath')}: {public_path} is not an OpenSSH public key; {_SSH_KEYGEN_HINT}")
    except OSError as exc:
        errors.append(f"{ssh_s.key('publicKeyPath')}: cannot read {public_path} ({exc.strerror}); {_SSH_KEYGEN_HINT}")
    try:
        private_key = _read_text(private_path) + "\n"
    except OSError as exc:
        errors.append(f"{ssh_s.key('privateKeyPath')}: cannot read {private_path} ({exc.strerror}); {_SSH_KEYGEN_HINT}")
    ssh = Ssh(user=ssh_user, public_key=public_key, private_key_path=private_path, private_key=private_key)

    cp_s = section("controlPlane")
    cp_name = cp_s.get("name", str, "k8smaster")
    cp_ip = _parse(errors, cp_s.key("ip"), cp_s.get("ip", str), ipaddress.IPv4Address, "IPv4 address")
    cp_sizing = _sizing(errors, cp_s, {"vcpu": 2, "memoryMiB": 4096, "diskGiB": 20})
    control_plane = None
    if cp_sizing and cp_name is not None and cp_ip is not None:
        control_plane = NodeSpec(cp_name, cp_ip, *cp_sizing)
    schedulable_explicit = cp_s.get("schedulable", bool, None)
    allow_replace = cp_s.get("allowReplace", bool, False)
    cp_s.done()

    workers_s = section("workers")
    count = workers_s.get("count", int, 3)
    prefix = workers_s.get("namePrefix", str, "k8sworker")
    first_ip = _parse(errors, workers_s.key("firstIp"), workers_s.get("firstIp", str, None), ipaddress.IPv4Address, "IPv4 address")
    worker_sizing = _sizing(errors, workers_s, {"vcpu": 2, "memoryMiB": 2048, "diskGiB": 20})
    workers: list[NodeSpec] = []
    if count is not None and count < 0:
        errors.append(f"{workers_s.key('count')}: must not be negative")
    elif count:
        if first_ip is None and "firstIp" not in workers_s.raw:
            errors.append(f"{workers_s.key('firstIp')}: required when workers.count > 0")
        if first_ip is not None and network is not None and first_ip in network.subnet:
            room = int(network.subnet.broadcast_address - 1) - int(first_ip) + 1
            if room < count:
                errors.append(
                    f"{workers_s.key('count')}: {count} workers from {first_ip} do not fit in {network.subnet} "
                    f"(room for {max(room, 0)})"
                )
                count = max(room, 0)
        if first_ip is not None and worker_sizing and prefix is not None:
            workers = [NodeSpec(f"{prefix}{i}", first_ip + (i - 1), *worker_sizing) for i in range(1, count + 1)]
    workers_s.done()

    for key, name in [(cp_s.key("name"), cp_name), (workers_s.key("namePrefix"), f"{prefix}1" if prefix else None)]:
        if name is not None and not _LABEL.match(name):
            errors.append(f"{key}: {name!r} is not a valid node name (RFC 1123 label: lowercase letters, digits, '-')")
    placed = ([(cp_s.key("ip"), control_plane)] if control_plane else []) + [(workers_s.key("firstIp"), w) for w in workers]
    _check_addresses(errors, network, placed)

    kube_s = section("kubernetes")
    version = kube_s.get("version", str, "1.36.3")
    service_cidr = _parse(errors, kube_s.key("serviceCidr"), kube_s.get("serviceCidr", str, "10.96.0.0/12"), ipaddress.IPv4Network, "IPv4 CIDR")
    pod_cidr = _parse(errors, kube_s.key("podCidr"), kube_s.get("podCidr", str, "10.244.0.0/16"), ipaddress.IPv4Network, "IPv4 CIDR")
    ttl_hours = kube_s.get_bounded("tokenTtlHours", 24, minimum=1, maximum=24 * 365)
    ready_timeout = kube_s.get_bounded("readyTimeoutSeconds", 900, minimum=60)
    kube_s.done()
    if version is not None and not _VERSION.match(version):
        errors.append(f"{kube_s.key('version')}: {version!r} must be MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.36 or 1.36.3")
    if service_cidr and pod_cidr and service_cidr.overlaps(pod_cidr):
        errors.append(f"{kube_s.key('podCidr')}: {pod_cidr} overlaps the service CIDR {service_cidr}")
    if subnet is not None:
        for key, cidr in [(kube_s.key("podCidr"), pod_cidr), (kube_s.key("serviceCidr"), service_cidr)]:
            if cidr is not None and subnet.overlaps(cidr):
                errors.append(f"{net_s.key('subnet')}: node subnet {subnet} overlaps {key} {cidr}")
        for other, other_net in _other_stack_networks(project_dir, stack):
            try:
                other_subnet = ipaddress.IPv4Network(str(other_net.get("subnet", DEFAULT_SUBNET)))
            except ValueError:
                continue
            if subnet.overlaps(other_subnet):
                errors.append(f"{net_s.key('subnet')}: {subnet} overlaps stack {other!r}'s subnet {other_subnet}; stacks share one host")

    flannel_s = section("flannel")
    flannel_version = flannel_s.get("version", str, "v0.27.2")
    flannel_s.done()

    mirrors = _mirrors(errors, f"{project}:mirrors", raw.get("mirrors"))
    flannel = Flannel(
        version=flannel_version,
        manifest_url=mirrors.flannel_manifest.replace("{version}", flannel_version or ""),
    )

    firewall = raw.get("firewall", "disable")
    if firewall not in ("disable", "open-ports"):
        errors.append(f"{project}:firewall: {firewall!r} must be 'disable' or 'open-ports'")
    stages = raw.get("stages", "kubernetes")
    if stages not in ("kubernetes", "os-prep"):
        errors.append(f"{project}:stages: {stages!r} must be 'kubernetes' (the whole cluster) or 'os-prep' (VMs and OS prep only)")

    if errors:
        raise ConfigError(errors)
    return Settings(
        project=project,
        stack=stack,
        work_dir=project_dir / ".cache" / stack,
        libvirt=libvirt_cfg,
        network=network,
        image=image,
        ssh=ssh,
        control_plane=control_plane,
        workers=tuple(workers),
        control_plane_schedulable=not workers if schedulable_explicit is None else schedulable_explicit,
        allow_control_plane_replace=allow_replace,
        kubernetes=Kubernetes(
            version=version,
            service_cidr=service_cidr,
            pod_cidr=pod_cidr,
            token_ttl_hours=ttl_hours,
            ready_timeout_seconds=ready_timeout,
        ),
        mirrors=mirrors,
        flannel=flannel,
        firewall=firewall,
        stages=stages,
    )


def _mirrors(errors: list[str], path: str, raw: Any) -> Mirrors:
    """`mirrors: cn` is shorthand for `mirrors: {preset: cn}`; explicit keys override the preset."""
    if isinstance(raw, str):
        raw = {"preset": raw}
    s = _Section(errors, path, raw)
    preset_name = s.get("preset", str, "none")
    preset = MIRROR_PRESETS.get(preset_name)
    if preset is None:
        errors.append(f"{s.key('preset')}: unknown preset {preset_name!r} (known: {', '.join(MIRROR_PRESETS)})")
        preset = {}

    def pick(key: str, upstream: str) -> str:
        return s.get(key, str, preset.get(key, upstream))

    mirrors = Mirrors(
        kube_packages=pick("kubePackages", KUBE_PACKAGES_UPSTREAM).rstrip("/"),
        image_repository=pick("imageRepository", IMAGE_REPOSITORY_UPSTREAM).rstrip("/"),
        flannel_manifest=pick("flannelManifest", FLANNEL_MANIFEST_UPSTREAM),
        flannel_registry=pick("flannelRegistry", "").rstrip("/"),
        os_apt=pick("osApt", "").rstrip("/"),
    )
    s.done()
    for key, url in [("kubePackages", mirrors.kube_packages), ("flannelManifest", mirrors.flannel_manifest), ("osApt", mirrors.os_apt)]:
        if url and not re.match(r"^https?://\S+$", url):
            errors.append(f"{s.key(key)}: {url!r} must be an http(s) URL")
    if not re.match(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$", mirrors.image_repository):
        errors.append(f"{s.key('imageRepository')}: {mirrors.image_repository!r} is not a registry path")
    return mirrors


TOP_LEVEL_KEYS = (
    "libvirt", "network", "image", "ssh", "controlPlane", "workers",
    "kubernetes", "flannel", "mirrors", "firewall", "stages",
)


def _decode(value: Optional[str]) -> Any:
    """Structured config arrives as JSON text; plain strings stay strings."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def load(project_dir: Optional[Path] = None) -> Settings:
    """Read this stack's config (the only pulumi.Config call in the program) and validate it."""
    config = pulumi.Config()
    raw = {key: _decode(config.get(key)) for key in TOP_LEVEL_KEYS}
    raw = {key: value for key, value in raw.items() if value is not None}
    return parse(raw, pulumi.get_stack(), project_dir or Path.cwd(), pulumi.get_project())
