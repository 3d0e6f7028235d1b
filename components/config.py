"""Stack configuration: read once, validated in full, frozen into typed objects.

The keys themselves (types, defaults, bounds, meaning) are declared in
config_schema.py. This module is the only reader of ``pulumi.Config``: it
validates each key against the schema, then runs the checks that span keys or
read files, and reports every problem in one ``ConfigError`` that names the key
at fault, before any resource is registered.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
from urllib.parse import urlsplit
from dataclasses import dataclass, field
from pathlib import Path
import typing
from typing import Any, Mapping, Optional

import pulumi
import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from .config_schema import (
    LABEL, MIN_DISK_GIB, MIN_MEMORY_MIB, MIN_VCPU, Addons, Certificates, Containerd, ControlPlane, Firewall, Image, Kubernetes,
    Libvirt, Mirrors, Network, Registry, Scope, Snapshots, Ssh, StackConfig, Workers, bounds,
)

PROJECT = "kvm-kubeadm"

_PUBLIC_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")
_SSH_KEYGEN_HINT = "create a key pair with: ssh-keygen -t ed25519 -f ~/.ssh/id_ed25519 -N ''"


class ConfigError(pulumi.RunError):
    """Every problem in the stack config, one per line, each naming its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


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
class SshLogin:
    user: str
    """Login user created by cloud-init, with passwordless sudo."""
    public_key: str
    """Authorised public key (the file's content)."""
    private_key_path: Path
    """Private key that pulumi-command uses; read as a secret."""
    private_key: str = field(repr=False)
    """Private key content; never printed."""


@dataclass(frozen=True)
class FlannelRelease:
    version: str
    """Flannel release tag."""
    manifest_url: str
    """Its manifest URL, from mirrors.flannelManifest."""


@dataclass(frozen=True)
class RegistryAccess:
    host: str
    """The registry as images name it, e.g. `registry.k8s.io` or `10.0.0.5:5000`."""
    mirrors: tuple[str, ...]
    """Pull-through endpoints tried first, in order."""
    ca_pem: Optional[str]
    """CA certificate(s) that sign its TLS certificate (PEM), or None for the system's trust."""
    plain_http: bool
    """It speaks plain HTTP."""


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    work_dir: Path
    """Git-ignored directory for files the program generates (cloud-init seed images)."""
    libvirt: Libvirt
    network: Network
    image: Image
    ssh: SshLogin
    control_plane: NodeSpec
    """The leader: the control plane that runs kubeadm init."""
    control_planes: tuple[NodeSpec, ...]
    """Every control plane, the leader first, then in the order they join."""
    vip: Optional[ipaddress.IPv4Address]
    """The control plane's virtual IP (controlPlane.vip), or None: the endpoint is then the leader's address."""
    workers: tuple[NodeSpec, ...]
    control_plane_schedulable: bool
    """Remove the control-plane taint so workloads run on it."""
    allow_control_plane_replace: bool
    """Opt-in: let a sizing change replace the control-plane VM."""
    kubernetes: Kubernetes
    mirrors: Mirrors
    """Download locations, with the preset applied."""
    flannel: FlannelRelease
    addons: Addons
    certificates: Certificates
    snapshots: Snapshots
    containerd: Containerd
    registries: tuple[RegistryAccess, ...]
    """Registry mirrors and trust, by registry host."""
    firewall: Firewall
    scope: Scope
    """How far the program goes: "kubernetes" (the whole cluster) or "os-prep" (VMs and OS prep only)."""

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return (*self.control_planes, *self.workers)

    @property
    def joining_control_planes(self) -> tuple[NodeSpec, ...]:
        """The control planes that join the leader's cluster, in order."""
        return self.control_planes[1:]


def versioned(url: str, version: str) -> str:
    """A download location whose `{version}` stands for a release tag."""
    return url.replace("{version}", version)


def libvirt_name(stack: str, name: str) -> str:
    """Every libvirt object is prefixed with the stack, so stacks never collide on a host."""
    return f"{stack}-{name}"


class _Problems:
    """Problems found so far, each as "<project>:<key>: <message>"."""

    def __init__(self, project: str):
        self.project = project
        self.lines: list[str] = []

    def key(self, path: str) -> str:
        return f"{self.project}:{path}"

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{self.key(path)}: {message}")


# --- validation against the schema ----------------------------------------------------

_KEYS = StackConfig.model_fields
_ADAPTERS = {name: TypeAdapter(key.annotation) for name, key in _KEYS.items()}
_TYPE_NAMES = {"int_type": "int", "string_type": "str", "bool_type": "bool", "list_type": "list", "dict_type": "object"}


def _message(error: ErrorDetails, key: FieldInfo, known: list[str]) -> str:
    """pydantic's error in our words; the bounds are read from the key's own declaration."""
    kind, value = error["type"], error["input"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return f"unknown key (known keys: {', '.join(sorted(known))})"
    if kind == "model_type":
        return f"must be an object, got {type(value).__name__}"
    if kind in _TYPE_NAMES:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        hint = f'; quote it: "{value}"' if kind == "string_type" and number else ""
        return f"must be {_TYPE_NAMES[kind]}, got {value!r}{hint}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"must be {bounds(key)}, got {value}"
    if kind == "literal_error":
        return f"{value!r} must be {error['ctx']['expected']}"
    return error["msg"]  # the schema's own format checks word their message themselves


def _validate(problems: _Problems, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Each top-level key on its own, so that the checks across keys still run on every valid one."""
    valid: dict[str, Any] = {}
    for name, top in _KEYS.items():
        if top.alias not in raw and not top.is_required():
            valid[name] = top.get_default(call_default_factory=True)
            continue
        try:
            # An absent required section is validated as empty, so the error names the keys it lacks.
            valid[name] = _ADAPTERS[name].validate_python(raw.get(top.alias, {}))
        except ValidationError as error:
            is_map = typing.get_origin(top.annotation) is dict
            model = typing.get_args(top.annotation)[1] if is_map else top.annotation
            keys = {k.alias: k for k in getattr(model, "model_fields", {}).values()}
            for detail in error.errors():
                loc = [part for part in detail["loc"] if part != "[key]"]
                within = loc[1:] if is_map else loc
                key = keys.get(str(within[0]), top) if within else top
                problems.add(_key_path(top.alias, loc, is_map), _message(detail, key, list(keys)))
    return valid


def _key_path(top: str, loc: list[Any], is_map: bool) -> str:
    """A key as `pulumi config set --path` writes it: `registries["ghcr.io"].mirrors[0]`."""
    path = top
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif is_map and index == 0:
            path += f"[{json.dumps(part)}]"
        else:
            path += f".{part}"
    return path


# --- checks across keys, and of the files keys point to -------------------------------

def check_cluster_cidrs(problems: _Problems, kubernetes: Kubernetes) -> None:
    if kubernetes.service_cidr.overlaps(kubernetes.pod_cidr):
        problems.add("kubernetes.podCidr", f"{kubernetes.pod_cidr} overlaps the service CIDR {kubernetes.service_cidr}")


def check_subnet_clear_of_cluster_cidrs(problems: _Problems, network: Network, kubernetes: Kubernetes) -> None:
    for path, cidr in [("kubernetes.podCidr", kubernetes.pod_cidr), ("kubernetes.serviceCidr", kubernetes.service_cidr)]:
        if network.subnet.overlaps(cidr):
            problems.add("network.subnet", f"node subnet {network.subnet} overlaps {problems.key(path)} {cidr}")


def check_subnet_clear_of_other_stacks(problems: _Problems, network: Network, stack: str, project_dir: Path) -> None:
    """Every committed stack can run on the same host."""
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        other = path.name[len("Pulumi."):-len(".yaml")]
        if other == stack:
            continue
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            theirs = Network.model_validate((document.get("config") or {}).get(problems.key("network"), {}))
        except (OSError, yaml.YAMLError, ValidationError):
            continue  # that stack reports its own problems
        if network.subnet.overlaps(theirs.subnet):
            problems.add(
                "network.subnet", f"{network.subnet} overlaps stack {other!r}'s subnet {theirs.subnet}; stacks share one host"
            )


def check_image_source(problems: _Problems, image: Image) -> None:
    if "://" not in image.source and not Path(image.source).expanduser().is_file():
        problems.add("image.source", f"{image.source!r} is neither a URL nor a readable local file")


def check_direct_kernel_boot(problems: _Problems, image: Image) -> None:
    if (image.kernel is None) != (image.initrd is None):
        problems.add("image.kernel", "direct kernel boot needs both image.kernel and image.initrd")


def _read_text(path: Path) -> str:
    return path.expanduser().read_text(encoding="utf-8").strip()


def read_ssh_login(problems: _Problems, ssh: Ssh) -> SshLogin:
    """The key files' content; a problem never quotes it."""
    private_path = Path(ssh.private_key_path)
    public_path = Path(ssh.public_key_path or f"{private_path}.pub")
    public_key = private_key = ""
    try:
        public_key = _read_text(public_path)
        if not _PUBLIC_KEY.match(public_key):
            problems.add("ssh.publicKeyPath", f"{public_path} is not an OpenSSH public key; {_SSH_KEYGEN_HINT}")
    except OSError as exc:
        problems.add("ssh.publicKeyPath", f"cannot read {public_path} ({exc.strerror}); {_SSH_KEYGEN_HINT}")
    try:
        private_key = _read_text(private_path) + "\n"
    except OSError as exc:
        problems.add("ssh.privateKeyPath", f"cannot read {private_path} ({exc.strerror}); {_SSH_KEYGEN_HINT}")
    return SshLogin(user=ssh.user, public_key=public_key, private_key_path=private_path, private_key=private_key)


def read_registries(problems: _Problems, registries: dict[str, Registry]) -> tuple[RegistryAccess, ...]:
    """Each registry with its CA file's content; a plain-HTTP endpoint only where its host allows it."""
    found = []
    for host, registry in registries.items():
        path = _key_path("registries", [host], is_map=True)
        for index, mirror in enumerate(registry.mirrors):
            endpoint = urlsplit(mirror)
            if endpoint.scheme == "http" and not (endpoint.netloc in registries and registries[endpoint.netloc].plain_http):
                problems.add(
                    f"{path}.mirrors[{index}]",
                    f"{mirror} is plain HTTP: allow it with {problems.key(_key_path('registries', [endpoint.netloc], True))}"
                    ".plainHttp: true",
                )
        ca_pem = None
        if registry.ca_file is not None:
            ca_path = Path(registry.ca_file).expanduser()
            try:
                ca_pem = ca_path.read_text(encoding="utf-8")
                blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", ca_pem, re.S)
                for block in blocks:
                    ssl.PEM_cert_to_DER_cert(block)
                if not blocks:
                    raise ValueError
            except OSError as exc:
                problems.add(f"{path}.caFile", f"cannot read {ca_path} ({exc.strerror})")
            except (ValueError, UnicodeDecodeError):
                problems.add(f"{path}.caFile", f"{ca_path} is not a PEM certificate")
        found.append(RegistryAccess(host, tuple(registry.mirrors), ca_pem, registry.plain_http))
    return tuple(found)


def check_node_minimums(problems: _Problems, path: str, nodes: ControlPlane | Workers) -> None:
    for key, value, minimum, whose in [
        ("vcpu", nodes.vcpu, MIN_VCPU, "kubeadm's minimum"),
        ("memoryMiB", nodes.memory_mib, MIN_MEMORY_MIB, "kubeadm's minimum"),
        ("diskGiB", nodes.disk_gib, MIN_DISK_GIB, "the minimum"),
    ]:
        if value < minimum:
            problems.add(f"{path}.{key}", f"{value} is below {whose} of {minimum}")


def check_first_worker_address(problems: _Problems, workers: Workers) -> None:
    if workers.count and workers.first_ip is None:
        problems.add("workers.firstIp", "required when workers.count > 0")


def _room(network: Network, first_ip: ipaddress.IPv4Address) -> Optional[int]:
    """How many consecutive addresses from first_ip the subnet holds, or None when first_ip is outside it."""
    if first_ip not in network.subnet:
        return None
    return int(network.subnet.broadcast_address - 1) - int(first_ip) + 1


def check_workers_fit(problems: _Problems, network: Network, workers: Workers) -> None:
    room = None if workers.first_ip is None else _room(network, workers.first_ip)
    if room is not None and room < workers.count:
        problems.add(
            "workers.count",
            f"{workers.count} workers from {workers.first_ip} do not fit in {network.subnet} (room for {max(room, 0)})",
        )


def check_node_names(problems: _Problems, control_plane: Optional[NodeSpec], workers: tuple[NodeSpec, ...]) -> None:
    named = ([("controlPlane.name", control_plane.name)] if control_plane else []) + [
        ("workers.namePrefix", worker.name) for worker in workers[:1]  # the workers' names differ only in the number
    ]
    for path, name in named:
        if not LABEL.match(name):
            problems.add(path, f"{name!r} is not a valid node name (RFC 1123 label: lowercase letters, digits, '-')")


def check_control_plane_count(problems: _Problems, control_plane: ControlPlane) -> None:
    if control_plane.count % 2 == 0:
        problems.add(
            "controlPlane.count",
            f"{control_plane.count} is even: etcd needs a majority of its members, so an even count tolerates no more "
            f"failures than one fewer; use {control_plane.count - 1} or {control_plane.count + 1}",
        )
    if control_plane.count > 1 and control_plane.vip is None:
        problems.add("controlPlane.vip", f"required when {problems.key('controlPlane.count')} > 1: the control planes' shared address")


def check_firewall_with_vip(problems: _Problems, firewall: Firewall) -> None:
    if firewall == "open-ports":
        problems.add(
            "firewall",
            f"open-ports cannot be used with {problems.key('controlPlane.vip')}: ufw has no rule for VRRP, which keepalived "
            "moves the VIP with; use disable",
        )


def check_control_planes_fit(problems: _Problems, network: Network, control_plane: ControlPlane) -> None:
    room = _room(network, control_plane.ip)
    if room is not None and room < control_plane.count:
        problems.add(
            "controlPlane.count",
            f"{control_plane.count} control planes from {control_plane.ip} do not fit in {network.subnet} (room for {max(room, 0)})",
        )


def _address_problem(network: Network, ip: ipaddress.IPv4Address) -> Optional[str]:
    """Why `ip` cannot be a node's or the VIP on `network`, or None."""
    subnet = network.subnet
    if ip not in subnet:
        return f"is outside the node subnet {subnet}"
    if ip in (subnet.network_address, subnet.broadcast_address):
        return f"is the network or broadcast address of {subnet}"
    if ip == network.gateway:
        return f"is the gateway address of {subnet}"
    return None


def check_vip(problems: _Problems, network: Optional[Network], vip: ipaddress.IPv4Address, nodes: tuple[NodeSpec, ...]) -> None:
    """The VIP on the node subnet, off its special addresses and every node's (the prepared image's builder
    takes an address that is neither: cluster.builder_address)."""
    problem = _address_problem(network, vip) if network is not None else None
    if problem:
        problems.add("controlPlane.vip", f"{vip} {problem}")
    for node in nodes:
        if node.ip == vip:
            problems.add("controlPlane.vip", f"{vip} is {node.name}'s address")


def check_addresses(
    problems: _Problems, network: Optional[Network], control_planes: tuple[NodeSpec, ...], workers: tuple[NodeSpec, ...]
) -> None:
    """Node IPs inside the subnet, off the network/gateway/broadcast addresses; each IP and name used once."""
    placed = [("controlPlane.ip" if index == 0 else "controlPlane.count", node) for index, node in enumerate(control_planes)]
    placed += [("workers.firstIp", w) for w in workers]
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    seen_names: set[str] = set()
    for path, node in placed:
        problem = _address_problem(network, node.ip) if network is not None else None
        if problem:
            problems.add(path, f"{node.ip} ({node.name}) {problem}")
        if node.ip in seen_ips:
            problems.add(path, f"{node.ip} ({node.name}) is already used by {seen_ips[node.ip]}")
        seen_ips.setdefault(node.ip, node.name)
        if node.name in seen_names:
            problems.add(path, f"node name {node.name!r} is used twice")
        seen_names.add(node.name)


def check_snapshots(problems: _Problems, snapshots: Snapshots, scope: Scope) -> None:
    """A snapshot needs a cluster's etcd; a restore, an archive of the stack's snapshots."""
    for key, on in (("everyUp", snapshots.every_up), ("trigger", snapshots.trigger), ("restoreFrom", snapshots.restore_from)):
        if on and scope != "kubernetes":
            problems.add(f"snapshots.{key}", f"needs a cluster, but {problems.key('stages')} is {scope!r}")
    if snapshots.restore_from and not Path(snapshots.restore_from).expanduser().is_file():
        problems.add("snapshots.restoreFrom", f"{snapshots.restore_from!r} is not a file")


def check_addons(
    problems: _Problems, addons: Addons, scope: Scope, workers: tuple[NodeSpec, ...], schedulable: Optional[bool],
) -> None:
    """An addon needs a cluster and a node to run on; the dashboard's NodePort, the dashboard."""
    wanted = [key for key, on in (("metricsServer", addons.metrics_server), ("localPath", addons.local_path),
                                  ("headlamp", addons.headlamp)) if on]
    if addons.headlamp and scope != "kubernetes":
        problems.add("addons.headlamp", f"needs a cluster, but {problems.key('stages')} is {scope!r}")
    if addons.headlamp_node_port is not None and not addons.headlamp:
        problems.add("addons.headlampNodePort", f"has no effect while {problems.key('addons.headlamp')} is false")
    if scope == "kubernetes" and wanted and not workers and schedulable is False:
        problems.add(
            "controlPlane.schedulable",
            f"false leaves no node for the addons ({', '.join(wanted)}) of a cluster without workers; "
            f"set it to true or turn them off under {problems.key('addons')}",
        )


# --- the whole -------------------------------------------------------------------------

def _node(name: str, ip: ipaddress.IPv4Address, sizing: ControlPlane | Workers) -> NodeSpec:
    return NodeSpec(name, ip, sizing.vcpu, sizing.memory_mib, sizing.disk_gib)


def _control_plane_nodes(control_plane: ControlPlane, network: Optional[Network]) -> tuple[NodeSpec, ...]:
    """The leader at `ip` with `name`, then `<name>2`.. at the next addresses; only as many as fit the subnet."""
    room = None if network is None else _room(network, control_plane.ip)
    count = control_plane.count if room is None else max(1, min(control_plane.count, room))
    names = [control_plane.name] + [f"{control_plane.name}{i}" for i in range(2, count + 1)]
    return tuple(_node(name, control_plane.ip + index, control_plane) for index, name in enumerate(names))


def _worker_nodes(workers: Workers, network: Optional[Network]) -> tuple[NodeSpec, ...]:
    """Workers 1..count at consecutive addresses from firstIp; only as many as fit the subnet."""
    if workers.first_ip is None:
        return ()
    room = None if network is None else _room(network, workers.first_ip)
    count = workers.count if room is None else min(workers.count, max(room, 0))
    return tuple(_node(f"{workers.name_prefix}{i}", workers.first_ip + (i - 1), workers) for i in range(1, count + 1))


def parse(raw: Mapping[str, Any], stack: str, project_dir: Path, project: str = PROJECT) -> Settings:
    """Validate the raw config values (already decoded from JSON) into Settings, or raise ConfigError."""
    problems = _Problems(project)
    valid = _validate(problems, raw)
    network, kubernetes, image = valid.get("network"), valid.get("kubernetes"), valid.get("image")
    control_plane, workers = valid.get("control_plane"), valid.get("workers")

    if kubernetes:
        check_cluster_cidrs(problems, kubernetes)
    if network and kubernetes:
        check_subnet_clear_of_cluster_cidrs(problems, network, kubernetes)
    if network:
        check_subnet_clear_of_other_stacks(problems, network, stack, project_dir)
    if image:
        check_image_source(problems, image)
        check_direct_kernel_boot(problems, image)
    ssh = read_ssh_login(problems, valid["ssh"]) if "ssh" in valid else None
    registries = read_registries(problems, valid["registries"]) if "registries" in valid else ()

    control_plane_nodes = _control_plane_nodes(control_plane, network) if control_plane else ()
    worker_nodes = _worker_nodes(workers, network) if workers else ()
    if control_plane:
        check_node_minimums(problems, "controlPlane", control_plane)
        check_control_plane_count(problems, control_plane)
        if control_plane.vip is not None:
            check_vip(problems, network, control_plane.vip, (*control_plane_nodes, *worker_nodes))
            if "firewall" in valid:
                check_firewall_with_vip(problems, valid["firewall"])
    if network and control_plane:
        check_control_planes_fit(problems, network, control_plane)
    if workers:
        check_node_minimums(problems, "workers", workers)
        check_first_worker_address(problems, workers)
    if network and workers:
        check_workers_fit(problems, network, workers)
    check_node_names(problems, control_plane_nodes[0] if control_plane_nodes else None, worker_nodes)
    check_addresses(problems, network, control_plane_nodes, worker_nodes)
    if control_plane and {"addons", "scope"} <= valid.keys():
        check_addons(problems, valid["addons"], valid["scope"], worker_nodes, control_plane.schedulable)
    if {"snapshots", "scope"} <= valid.keys():
        check_snapshots(problems, valid["snapshots"], valid["scope"])

    if problems.lines:
        raise ConfigError(problems.lines)
    mirrors, flannel = valid["mirrors"], valid["flannel"]
    return Settings(
        project=project,
        stack=stack,
        work_dir=project_dir / ".cache" / stack,
        libvirt=valid["libvirt"],
        network=network,
        image=image,
        ssh=ssh,
        control_plane=control_plane_nodes[0],
        control_planes=control_plane_nodes,
        vip=control_plane.vip,
        workers=worker_nodes,
        control_plane_schedulable=not worker_nodes if control_plane.schedulable is None else control_plane.schedulable,
        allow_control_plane_replace=control_plane.allow_replace,
        kubernetes=kubernetes,
        mirrors=mirrors,
        flannel=FlannelRelease(flannel.version, versioned(mirrors.flannel_manifest, flannel.version)),
        addons=valid["addons"],
        certificates=valid["certificates"],
        snapshots=valid["snapshots"],
        containerd=valid["containerd"],
        registries=registries,
        firewall=valid["firewall"],
        scope=valid["scope"],
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
    raw = {key.alias: _decode(config.get(key.alias)) for key in _KEYS.values()}
    raw = {key: value for key, value in raw.items() if value is not None}
    return parse(raw, pulumi.get_stack(), project_dir or Path.cwd(), pulumi.get_project())
