"""The `kvm-kubeadm:` stack config, declared: every key's type, default, bounds and meaning.

components/config.py validates a stack's config against these models, and
tools/config_docs.py generates the README's key table and the editor JSON Schema
(schema/stack-config.schema.json) from them, so the three cannot drift apart.
Fields are snake_case; each is written in the stack file under its camelCase alias.
"""

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import PurePosixPath
from typing import Annotated, Any, Callable, Literal, Optional

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

UBUNTU_NOBLE_IMAGE = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
KUBE_PACKAGES_UPSTREAM = "https://pkgs.k8s.io/core:/stable:"
IMAGE_REPOSITORY_UPSTREAM = "registry.k8s.io"
FLANNEL_MANIFEST_UPSTREAM = "https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml"
METRICS_SERVER_MANIFEST_UPSTREAM = "https://github.com/kubernetes-sigs/metrics-server/releases/download/{version}/components.yaml"
LOCAL_PATH_MANIFEST_UPSTREAM = (
    "https://raw.githubusercontent.com/rancher/local-path-provisioner/{version}/deploy/local-path-storage.yaml"
)
CONTAINERD_PACKAGES_UPSTREAM = "https://download.docker.com"

# Mirror presets: each names only what it changes (by config key); everything else stays upstream.
MIRROR_PRESETS: dict[str, dict[str, str]] = {
    "none": {},
    "cn": {
        "kubePackages": "https://mirrors.aliyun.com/kubernetes-new/core/stable",
        "imageRepository": "registry.aliyuncs.com/google_containers",
        "containerdPackages": "https://mirrors.aliyun.com/docker-ce",
        "osApt": "https://mirrors.aliyun.com",
    },
}

# Node minimums, checked by config.check_node_minimums so that the error can say whose minimum it is.
MIN_VCPU = 2  # kubeadm preflight NumCPU
MIN_MEMORY_MIB = 2048  # kubeadm preflight Mem (1700 MB, rounded up to what the procedure uses)
MIN_DISK_GIB = 10

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""An RFC 1123 label: what a hostname, a Kubernetes node name and our libvirt names must be."""


def _format(pattern: str, problem: str) -> Any:
    """A string matching `pattern`; otherwise the error reads "'<value>' <problem>"."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.match(value):
            raise PydanticCustomError("format", "{value} " + problem, {"value": repr(value)})
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})]


def _ipv4(kind: Callable[[str], Any], what: str) -> Any:
    """An IPv4 address or network, written as a string (strict mode would take only the object)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a valid string")
        try:
            return kind(value)
        except ValueError:
            raise PydanticCustomError("format", "{value} is not a valid " + what, {"value": repr(value)}) from None

    return Annotated[kind, BeforeValidator(parse)]


_URL = r"https?://\S+"
_REGISTRY = r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*/?"
_DNS_NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
_NO_TRAILING_SLASH = AfterValidator(lambda value: value.rstrip("/"))

Cidr = _ipv4(IPv4Network, "IPv4 CIDR")
Address = _ipv4(IPv4Address, "IPv4 address")
Label = _format(LABEL.pattern, "must be a lowercase RFC 1123 label")
LinuxUser = _format(r"^[a-z_][a-z0-9_-]{0,31}$", "is not a valid Linux user name")
KubeVersion = _format(r"^(\d+)\.(\d+)(\.\d+)?$", "must be MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.36 or 1.36.3")
Url = _format(f"^{_URL}$", "must be an http(s) URL")
UrlOrEmpty = _format(f"^({_URL})?$", "must be an http(s) URL or empty")
RegistryPath = _format(f"^{_REGISTRY}$", "is not a registry path")
RegistryOrEmpty = _format(f"^({_REGISTRY})?$", "is not a registry path")
DnsDomain = _format(f"^{_DNS_NAME}$", "is not a DNS domain (lowercase labels separated by dots)")
RegistryHost = _format(rf"^{_DNS_NAME}(:\d+)?$", "is not a registry host (a DNS name or address, with an optional :port)")
LibvirtUri = _format(r"^[a-z][a-z0-9+]*://\S*$", "is not a libvirt URI, e.g. qemu:///system")
PoolName = _format(r"^[^/\s]+$", "is not a libvirt storage pool name")


def _release_tag(project: str, example: str) -> Any:
    return _format(r"^v\d+\.\d+\.\d+$", f"must be a {project} release tag, e.g. {example}")


FlannelVersion = _release_tag("flannel", "v0.27.4")
MetricsServerVersion = _release_tag("metrics-server", "v0.8.0")
LocalPathVersion = _release_tag("local-path-provisioner", "v0.0.30")
HeadlampVersion = _release_tag("Headlamp", "v0.35.0")
ContainerdVersion = _format(r"^\d+\.\d+(\.\d+)?$", "must be MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 2.2 or 2.2.9")
Firewall = Literal["disable", "open-ports"]
Scope = Literal["kubernetes", "os-prep"]


def bounds(field: FieldInfo) -> Optional[str]:
    """The field's declared range in words ("between 1 and 8760", "at least 60"), or None."""
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"at least {low}"
    return None if high is None else f"at most {high}"


class _Section(BaseModel):
    """A config object: camelCase keys, no unknown ones, no type coercion, frozen once read."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True, strict=True)


# Sizing keys: controlPlane and workers declare the same three, with defaults of their own.
def _vcpu(default: int) -> Any:
    return Field(default, description=f"virtual CPUs (kubeadm's minimum: {MIN_VCPU})", json_schema_extra={"minimum": MIN_VCPU})


def _memory_mib(default: int) -> Any:
    return Field(
        default, alias="memoryMiB", description=f"memory in MiB (kubeadm's minimum: {MIN_MEMORY_MIB})",
        json_schema_extra={"minimum": MIN_MEMORY_MIB},
    )


def _disk_gib(default: int) -> Any:
    return Field(
        default, alias="diskGiB", description=f"root disk size in GiB (minimum: {MIN_DISK_GIB})",
        json_schema_extra={"minimum": MIN_DISK_GIB},
    )


class Libvirt(_Section):
    uri: LibvirtUri = Field("qemu:///system", description="libvirt connection URI of the KVM host")
    pool: PoolName = Field("default", description="existing storage pool that holds every volume")
    boot_timeout_seconds: int = Field(
        600, ge=60,
        description="how long creating a VM waits for its DHCP lease (the provider's own default is 5 minutes); "
        "raise it on hosts without KVM, where guests boot under software emulation",
    )


class Network(_Section):
    name: Label = Field(
        "k8s", description="NAT network name; the libvirt network is named `<stack>-<name>`",
    )
    subnet: Cidr = Field(
        IPv4Network("192.168.56.0/24"), description="node subnet; not libvirt's own default 192.168.122.0/24",
    )
    domain: DnsDomain = Field("k8s.lan", description="DNS domain served by the network's dnsmasq")

    @property
    def gateway(self) -> IPv4Address:
        """libvirt gives the host bridge the first address."""
        return self.subnet.network_address + 1


class Image(_Section):
    source: str = Field(UBUNTU_NOBLE_IMAGE, description="base OS image (Ubuntu 24.04 cloud image): a URL or a local path")
    kernel: Optional[str] = Field(
        None, description="kernel for direct kernel boot (a path on the libvirt host), for images without a boot loader",
    )
    initrd: Optional[str] = Field(None, description="initrd for direct kernel boot; set with `kernel`")
    cmdline: str = Field("", description="kernel command line for direct kernel boot")
    prepared: bool = Field(
        False,
        description="clone every node from a prepared image: this image with the OS prep, containerd, the kube packages "
        "and every image the cluster runs already in it, built once per inputs and kept in the pool as a cache "
        "(README: Prepared node image)",
    )


class Ssh(_Section):
    user: LinuxUser = Field(
        "kube", description="login user created by cloud-init, with passwordless sudo",
    )
    private_key_path: str = Field("~/.ssh/id_ed25519", description="private key the program logs in with; read as a secret")
    public_key_path: Optional[str] = Field(
        None, description="public key authorised on every node; unset: `privateKeyPath` + `.pub`",
    )


MAX_CONTROL_PLANES = 7


class ControlPlane(_Section):
    name: str = Field(
        "k8smaster",
        description="hostname and Kubernetes node name of the first control-plane VM (the leader, which runs kubeadm "
        "init); the others are `<name>2` to `<name><count>`",
    )
    ip: Address = Field(description="the leader's fixed address on the node subnet; the others follow consecutively")
    count: int = Field(
        1, ge=1, le=MAX_CONTROL_PLANES,
        description="number of control planes: 1, or an odd number for a highly available control plane behind "
        "`vip` (etcd needs a majority of its members); see [High availability](#high-availability)",
    )
    vip: Optional[Address] = Field(
        None,
        description="virtual IP on the node subnet that keepalived moves to a healthy control plane, where haproxy "
        "spreads the API over every control plane; the cluster's endpoint is `<vip>:8443`. Required when count > 1; "
        "with one control plane it lets the cluster grow later; cannot be added or changed on a live cluster",
    )
    vcpu: int = _vcpu(2)
    memory_mib: int = _memory_mib(4096)
    disk_gib: int = _disk_gib(20)
    schedulable: Optional[bool] = Field(
        None, description="remove the control-plane taint so workloads run on it; unset: true when there are no workers",
    )
    allow_replace: bool = Field(
        False,
        description="let a vCPU/memory change replace (reboot) the control-plane VM; without it such a change fails the preview",
    )


class Workers(_Section):
    count: int = Field(3, ge=0, description="number of workers")
    name_prefix: str = Field("k8sworker", description="workers are named `<namePrefix>1` to `<namePrefix><count>`")
    first_ip: Optional[Address] = Field(
        None, description="address of the first worker, the others follow consecutively; required when count > 0",
    )
    vcpu: int = _vcpu(2)
    memory_mib: int = _memory_mib(2048)
    disk_gib: int = _disk_gib(20)


# Kubernetes' own defaults (seconds).
LEADER_ELECTION_RENEW_DEADLINE = 10
ETCD_HEALTH_CHECK_TIMEOUT = 2
# kubeadm's probes on its static pods: readiness every second, liveness every 10 s.
READINESS_PROBE_PERIOD = 1
LIVENESS_PROBE_FAILURE_THRESHOLD = 8


class Kubernetes(_Section):
    version: KubeVersion = Field(
        "1.36.3",
        description="`MAJOR.MINOR` or `MAJOR.MINOR.PATCH`; packages are pinned to it and held; a change on a live cluster "
        "is a kubeadm upgrade, see [Upgrade Kubernetes](#upgrade-kubernetes)",
    )
    service_cidr: Cidr = Field(IPv4Network("10.96.0.0/12"), description="service CIDR, as in the procedure")
    pod_cidr: Cidr = Field(IPv4Network("10.244.0.0/16"), description="pod CIDR, as in the procedure (flannel's default)")
    token_ttl_hours: int = Field(
        24, ge=1, le=24 * 365, description="bootstrap token lifetime; renewed on `pulumi up` in its last quarter",
    )
    ready_timeout_seconds: int = Field(900, ge=60, description="bound on the flannel rollout and the ready checks")
    control_plane_timeout_seconds: int = Field(
        240, ge=60,
        description="how long kubeadm waits for the control-plane components to turn healthy, at init and at a "
        "control plane's join (its `controlPlaneComponentHealthCheck`; in an upgrade also for their new static pods, "
        "`upgradeManifests`, never below kubeadm's 300 s); raise it on slow or emulated hosts",
    )
    kubelet_timeout_seconds: int = Field(
        240, ge=60, description="how long kubeadm waits for the kubelet to turn healthy (its `kubeletHealthCheck`)",
    )
    api_call_timeout_seconds: int = Field(
        60, ge=10,
        description="how long kubeadm retries one call to the API server, e.g. while it sets up the admin user "
        "(its `kubernetesAPICall`); raise it on slow or emulated hosts",
    )
    etcd_api_call_timeout_seconds: int = Field(
        120, ge=30,
        description="how long a joining control plane's kubeadm waits on etcd's API, above all for its new etcd "
        "member to catch up with the leader and be promoted from learner to voter (its `etcdAPICall`), and how long "
        "the removal of a control plane's etcd member is tried; raise it on slow or emulated hosts",
    )
    leader_election_renew_deadline_seconds: int = Field(
        LEADER_ELECTION_RENEW_DEADLINE, ge=LEADER_ELECTION_RENEW_DEADLINE,
        description="how long kube-controller-manager and kube-scheduler try to renew their leader lease before they "
        "exit (their `--leader-elect-renew-deadline`; the lease lasts 1.5 times as long); raise it on slow or emulated "
        "hosts, where a slow API server makes them lose the lease and restart in a loop",
    )
    etcd_health_check_timeout_seconds: int = Field(
        ETCD_HEALTH_CHECK_TIMEOUT, ge=ETCD_HEALTH_CHECK_TIMEOUT, le=10,
        description="how long kube-apiserver's liveness check waits for etcd (its `--etcd-healthcheck-timeout`); the "
        "kubelet restarts kube-apiserver after `livenessProbeFailureThreshold` failed checks in a row, so raise it on "
        "slow or emulated hosts, where an overloaded etcd answers late and the restart only adds load; the bound "
        "keeps the check within the kubelet's 15-second probe timeout",
    )
    readiness_probe_period_seconds: int = Field(
        READINESS_PROBE_PERIOD, ge=READINESS_PROBE_PERIOD, le=60,
        description="how often the kubelet checks that kube-apiserver, kube-scheduler and etcd are ready (kubeadm: "
        "every second, and each check of kube-apiserver reads from etcd); raise it on slow or emulated hosts to take "
        "that load off the control plane; written into the static pods at init and at each upgrade",
    )
    liveness_probe_failure_threshold: int = Field(
        LIVENESS_PROBE_FAILURE_THRESHOLD, ge=LIVENESS_PROBE_FAILURE_THRESHOLD,
        description="how many liveness checks in a row, 10 s apart, kube-apiserver, kube-controller-manager, "
        "kube-scheduler or etcd may fail before the kubelet restarts it; raise it on slow or emulated hosts, where a "
        "restart only adds load to an overloaded etcd; written into the static pods at init and at each upgrade",
    )
    join_timeout_seconds: int = Field(
        300, ge=60,
        description="how long a joining node's kubeadm waits for discovery and for its TLS bootstrap "
        "(its `discovery` and `tlsBootstrap`); also how long the join stage waits for the API server to be ready, "
        "and the time within which it retries a failed join (3 attempts at most)",
    )
    drain_timeout_seconds: int = Field(
        300, ge=30,
        description="bound on each drain: before a node's kubelet is upgraded (the `up` fails there and a later `up` "
        "resumes), and of a worker that leaves the config (its Node is then deleted anyway); raise it on slow or "
        "emulated hosts, or where disruption budgets make evictions wait for replacements",
    )
    upgrade_concurrency: int = Field(
        1, ge=1, description="how many workers a version change drains and upgrades at a time, after the control plane",
    )

    @property
    def minor(self) -> str:
        """MAJOR.MINOR, the only form the pkgs.k8s.io repo path accepts."""
        major, minor = self.version.split(".")[:2]
        return f"{major}.{minor}"


class Flannel(_Section):
    version: FlannelVersion = Field("v0.27.4", description="flannel release whose manifest is applied")


# Trees a local-path volume directory must stay out of: the OS's own and the node's Kubernetes
# state. The provisioner makes a directory per volume there and removes it with the volume.
RESERVED_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
    "/var/lib/containerd", "/var/lib/etcd", "/var/lib/kubelet",
)


def _volume_dir(value: str) -> str:
    path = PurePosixPath(value)
    problem = None
    if not re.fullmatch(r"/[A-Za-z0-9._/-]*", value) or any(part in (".", "..") for part in value.split("/")):
        problem = "must be an absolute path of letters, digits, '.', '_', '-' and '/', without '.' or '..' parts"
    elif path == PurePosixPath("/"):
        problem = "is the root directory; name a directory of its own, e.g. /opt/local-path-provisioner"
    elif reserved := next((tree for tree in RESERVED_TREES if path.is_relative_to(tree)), None):
        problem = f"lies in {reserved}, which belongs to the OS or to Kubernetes"
    if problem:
        raise PydanticCustomError("format", "{value} " + problem, {"value": repr(value)})
    return str(path)


VolumeDir = Annotated[str, AfterValidator(_volume_dir), WithJsonSchema({"type": "string", "pattern": "^/"})]
HeadlampAccess = Literal["read-only", "cluster-admin"]


class Addons(_Section):
    """What a learning cluster ships besides the pod network, each installed after every node is Ready."""

    metrics_server: bool = Field(True, description="install metrics-server: `kubectl top` and autoscaling get figures")
    metrics_server_version: MetricsServerVersion = Field(
        "v0.8.0", description="metrics-server release whose manifest is applied",
    )
    local_path: bool = Field(
        True, description="install rancher's local-path-provisioner as the default StorageClass `local-path`: a "
        "PersistentVolumeClaim binds to a directory on the node its pod runs on",
    )
    local_path_version: LocalPathVersion = Field(
        "v0.0.30", description="local-path-provisioner release whose manifest is applied",
    )
    local_path_dir: VolumeDir = Field(
        "/opt/local-path-provisioner",
        description="directory on each node that holds the volumes (one directory each); outside the OS's and "
        "Kubernetes' own trees",
    )
    headlamp: bool = Field(
        False, description="install the Headlamp dashboard; its login token is the secret stack output "
        "`headlampToken`, the command that opens it `headlampCommand`",
    )
    headlamp_version: HeadlampVersion = Field(
        "v0.35.0", description="Headlamp release (image `ghcr.io/headlamp-k8s/headlamp:<version>`)",
    )
    headlamp_access: HeadlampAccess = Field(
        "read-only", description="what the dashboard's login may do: `read-only` (every resource but Secrets) or "
        "`cluster-admin` (everything)",
    )
    headlamp_node_port: Optional[int] = Field(
        None, ge=30000, le=32767,
        description="serve the dashboard on this NodePort of every node; unset: reach it with `kubectl port-forward` "
        "from the KVM host only",
    )


class Certificates(_Section):
    """The control planes' kubeadm certificates (one year each), checked on every `up`."""

    renew_before_days: int = Field(
        30, ge=1, le=3650,
        description="renew a control plane's certificates (`kubeadm certs renew all`, its static pods restarted) on the "
        "`up` that finds the earliest of them expiring within this many days; the stack output "
        "`certificatesExpire` shows the earliest expiry",
    )


class Snapshots(_Section):
    """etcd snapshots, with the PKI a restore needs, kept on the KVM host."""

    every_up: bool = Field(False, description="take a snapshot on every `up` (each `up` then plans an update)")
    trigger: str = Field(
        "", description="take a snapshot on the next `up` whenever this value changes (a date, a counter); empty: none "
        "on demand",
    )
    directory: str = Field(
        "~/.kvm-kubeadm/snapshots",
        description="directory on the KVM host that keeps them, one subdirectory per stack (mode 0700, each archive 0600)",
    )
    keep: int = Field(5, ge=1, le=1000, description="how many of the newest snapshots of the stack are kept")
    restore_from: str = Field(
        "", description="a snapshot archive on the KVM host that a new leader is restored from, before its init (see "
        "[etcd snapshots](#etcd-snapshots)); a leader that has a cluster already is left alone",
    )


class Containerd(_Section):
    source: Literal["docker", "distro"] = Field(
        "docker",
        description="`docker`: Docker's `containerd.io` package (containerd 2.x, from `mirrors.containerdPackages`); "
        "`distro`: the guest's own `containerd` package (Debian 12: 1.6, past its end of life)",
    )
    version: ContainerdVersion = Field(
        "2.2", description="`containerd.io` version (MAJOR.MINOR or MAJOR.MINOR.PATCH) installed and held; with `distro`, "
        "the archive's version is taken",
    )


class Registry(_Section):
    """How nodes reach one registry, as images name it (e.g. `registry.k8s.io`, `ghcr.io`, `docker.io`, `10.0.0.5:5000`)."""

    mirrors: list[Url] = Field(
        default_factory=list,
        description="pull-through endpoints tried before the registry itself, in order (e.g. `https://10.0.0.5:5000`)",
    )
    ca_file: Optional[str] = Field(
        None, description="PEM CA certificate (a file on the Pulumi host) that signs this registry's TLS certificate; "
        "copied to every node",
    )
    plain_http: bool = Field(
        False, description="this registry speaks plain HTTP: an `http://` mirror endpoint of this host needs it",
    )


class Mirrors(_Section):
    """Every download location. `mirrors: cn` is short for `{preset: cn}`; explicit keys override the preset."""

    preset: str = Field(
        "none",
        description=f"named set of download locations ({', '.join(MIRROR_PRESETS)}); see [Mirrors](#mirrors)",
        json_schema_extra={"enum": list(MIRROR_PRESETS)},
    )
    kube_packages: Annotated[Url, _NO_TRAILING_SLASH] = Field(
        KUBE_PACKAGES_UPSTREAM, description="base URL of the kube package repo; `/v<MAJOR.MINOR>/deb/` is appended",
    )
    image_repository: Annotated[RegistryPath, _NO_TRAILING_SLASH] = Field(
        IMAGE_REPOSITORY_UPSTREAM, description="registry for the control-plane images and containerd's pause image",
    )
    flannel_manifest: Url = Field(
        FLANNEL_MANIFEST_UPSTREAM, description="flannel manifest URL; `{version}` is replaced by `flannel.version`",
    )
    containerd_packages: Annotated[Url, _NO_TRAILING_SLASH] = Field(
        CONTAINERD_PACKAGES_UPSTREAM,
        description="base URL of Docker's package repository (`containerd.source: docker`); `/linux/<distro>` is appended",
    )
    metrics_server_manifest: Url = Field(
        METRICS_SERVER_MANIFEST_UPSTREAM,
        description="metrics-server manifest URL; `{version}` is replaced by `addons.metricsServerVersion`",
    )
    local_path_manifest: Url = Field(
        LOCAL_PATH_MANIFEST_UPSTREAM,
        description="local-path-provisioner manifest URL; `{version}` is replaced by `addons.localPathVersion`",
    )
    flannel_registry: Annotated[RegistryOrEmpty, _NO_TRAILING_SLASH] = Field(
        "", description="registry that replaces flannel's own (e.g. `registry.example.com/flannel-io`), or empty",
    )
    os_apt: Annotated[UrlOrEmpty, _NO_TRAILING_SLASH] = Field(
        "", description="OS apt mirror host (each apt source keeps its path), or empty to keep the image's sources",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"preset": data}
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            return {**MIRROR_PRESETS.get(data["preset"], {}), **data}
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in MIRROR_PRESETS:
            raise PydanticCustomError(
                "preset", "unknown preset {preset} (known: {known})", {"preset": repr(preset), "known": ", ".join(MIRROR_PRESETS)},
            )
        return preset

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """Editors also accept the string shorthand."""
        return {"anyOf": [{"type": "string", "enum": list(MIRROR_PRESETS)}, handler(core_schema)]}


class StackConfig(_Section):
    """Everything under the `kvm-kubeadm:` namespace of a stack's config."""

    libvirt: Libvirt = Field(default_factory=Libvirt, description="the KVM host's libvirt")
    network: Network = Field(default_factory=Network, description="the cluster's NAT network")
    image: Image = Field(default_factory=Image, description="the base OS image of every node")
    ssh: Ssh = Field(default_factory=Ssh, description="how the program logs in to the nodes")
    control_plane: ControlPlane = Field(description="the control-plane VM")
    workers: Workers = Field(default_factory=Workers, description="the worker VMs")
    kubernetes: Kubernetes = Field(default_factory=Kubernetes, description="the Kubernetes release and cluster networks")
    flannel: Flannel = Field(default_factory=Flannel, description="the pod network add-on")
    addons: Addons = Field(default_factory=Addons, description="metrics, storage and the dashboard")
    certificates: Certificates = Field(default_factory=Certificates, description="certificate renewal")
    snapshots: Snapshots = Field(default_factory=Snapshots, description="etcd snapshots on the KVM host")
    mirrors: Mirrors = Field(default_factory=Mirrors, description="download locations; `mirrors: cn` is short for `{preset: cn}`")
    containerd: Containerd = Field(default_factory=Containerd, description="the container runtime")
    registries: dict[RegistryHost, Registry] = Field(
        default_factory=dict, description="registry mirrors and trust, by registry host; see [Registries](#registries)",
    )
    firewall: Firewall = Field(
        "disable", description="`disable` (the procedure) or `open-ports` (ufw allows the Kubernetes and flannel ports, and where workloads run the NodePort range)",
    )
    scope: Scope = Field(
        "kubernetes", alias="stages",
        description="how far the program goes: `kubernetes` (the whole cluster) or `os-prep` "
        "(VMs and OS prep only, for installing Kubernetes your own way)",
    )
