"""The offline mirror's container images, pulled by containerd 2.x through its TLS registry, with nothing else reachable.

tools/mirror-kit/build-images.sh builds (or, by its stamps, keeps) the images in .cache/mirror/registry. This
module creates a network namespace whose only links are lo and a dummy interface holding the mirror's address
(no route out), and in it

* serves the mirror with tools/mirror-kit/serve.sh, from a directory of the test's own that shares the built
  registry storage, www and tools, so serve.sh makes a fresh kit CA and a server certificate for the address;
* starts containerd 2.x (.toolchain/bin/containerd2) with a scratch root and state and a config whose
  `config_path` names a certs.d directory holding `<host:port>/hosts.toml` with the kit's CA;
* pulls, with ctr, every image that kubeadm and the served kube-flannel.yml, metrics-server components.yaml and
  local-path-storage.yaml name for that mirror, the kube images of the older Kubernetes versions the kit serves
  for upgrade tests (MIRROR_KUBE_UPGRADE_FROM), and images by their docker.io and ghcr.io names, which the
  printed `registries` entries send to the kit.

What each image must hold comes from the real manifests: kubeadm's own static Pods, CoreDNS Deployment and
kube-proxy DaemonSet (an offline `kubeadm init --dry-run` against the mirror's imageRepository) and the served,
pinned kube-flannel.yml (its images moved to flannelRegistry) and addon manifests (metrics-server's image as the
program names it under imageRepository, local-path-provisioner's by its docker.io name). The commands those
manifests run, and the scripts of the provisioner's helper pod, are then run in a chroot of each unpacked image
(containerd's native snapshotter: a snapshot is a plain directory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest
import yaml

from components.config import parse
from components.config_schema import Addons, Flannel, Kubernetes
from components.registries import certs_d_files
from tests.conftest import with_keys
from tests.mirror import KUBE_VERSIONS, PINS, run_kit_script, stop
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import TOOLCHAIN, require

pytestmark = pytest.mark.mirror

KIT = PROJECT_DIR / "tools" / "mirror-kit"
OUT = PROJECT_DIR / ".cache" / "mirror"
KUBE_VERSION = PINS["MIRROR_KUBE_VERSION"]
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")  # one image each, per version
FLANNEL_VERSION = PINS["MIRROR_FLANNEL_VERSION"]
METRICS_SERVER_VERSION, LOCAL_PATH_VERSION = PINS["MIRROR_METRICS_SERVER_VERSION"], PINS["MIRROR_LOCAL_PATH_VERSION"]
METRICS_SERVER_IMAGE = "registry.k8s.io/metrics-server/metrics-server"  # as its release manifest names it
KUBEADM = TOOLCHAIN / "bin" / "kubeadm"
CONTAINERD = TOOLCHAIN / "bin" / "containerd2"
CTR = OUT / "bin" / "ctr"

ADDRESS = "192.0.2.10"  # TEST-NET-1: on lo of the test's namespace, nowhere else
HTTP_PORT, REGISTRY_PORT = 8080, 5000
NATIVE = ("--snapshotter", "native")
# The executables a manifest starts, and the flag that makes each print its version and exit.
VERSION_FLAGS = {
    "kube-apiserver": "--version", "kube-controller-manager": "--version", "kube-scheduler": "--version",
    "kube-proxy": "--version", "etcd": "--version", "coredns": "-version", "flanneld": "--version",
    "metrics-server": "--version", "local-path-provisioner": "--version",
}
CAP_NET_BIND_SERVICE = 10


def missing_prerequisite() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (ip netns, chroot, containerd)"
    # build-images.sh installs the Debian packages it runs itself (as root).
    missing = [tool for tool in ("ip", "unshare", "chroot", "apt-get", "go") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (iproute2, util-linux, coreutils, apt; Go: see tools/TOOLCHAIN.md)"
    built = [p for p in (KUBEADM, CONTAINERD) if not p.exists()]
    if built:
        return f"missing {', '.join(str(p.relative_to(PROJECT_DIR)) for p in built)}: run tools/setup.sh --full"
    return None


def run(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{' '.join(map(str, result.args))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


# ---------------------------------------------------------------------------
# the namespace, the served mirror, containerd


@dataclass
class Netns:
    name: str

    def run(self, argv: list, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.name, *map(str, argv)], timeout=timeout, **kwargs)

    def fetch(self, url: str) -> bytes:
        probe = f"import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen({url!r}, timeout=10).read())"
        result = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", probe], capture_output=True, timeout=60)
        assert result.returncode == 0, f"GET {url} in {self.name} failed:\n{result.stderr.decode()}"
        return result.stdout


@pytest.fixture(scope="module")
def built() -> Path:
    require(missing_prerequisite())
    run_kit_script(KIT / "build-images.sh", timeout=4 * 3600)
    return OUT


@pytest.fixture(scope="module")
def netns(built) -> Iterator[Netns]:
    """Only lo, which also holds the mirror's address: no route leads anywhere. Removed with all its processes."""
    name = f"kvmk-images-{os.getpid()}"
    ok(run(["ip", "netns", "add", name]))
    try:
        ok(run(["ip", "-n", name, "link", "set", "lo", "up"]))
        ok(run(["ip", "-n", name, "addr", "add", f"{ADDRESS}/32", "dev", "lo"]))
        yield Netns(name)
    finally:
        for pid in run(["ip", "netns", "pids", name]).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "delete", name])


@dataclass
class Served:
    directory: Path
    stack_config: dict
    registry: str

    @property
    def ca(self) -> Path:
        return self.directory / "pki" / "ca.crt"


@pytest.fixture(scope="module")
def served(built, netns, tmp_path_factory) -> Iterator[Served]:
    """serve.sh on ADDRESS, from a directory sharing the built registry, www and tools (its own CA and run/)."""
    directory = tmp_path_factory.mktemp("mirror")
    for shared in ("registry", "www", "bin"):
        (directory / shared).symlink_to(built / shared)
    try:
        result = netns.run([KIT / "serve.sh", ADDRESS, "--http-port", HTTP_PORT, "--registry-port", REGISTRY_PORT,
                            "--out", directory], timeout=120)
        assert result.returncode == 0, f"serve.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        yield Served(directory, yaml.safe_load(result.stdout), f"{ADDRESS}:{REGISTRY_PORT}")
    finally:
        run([str(KIT / "serve.sh"), "--stop", "--out", str(directory)])


def program_settings(served: Served, ssh_keys):
    """The dev stack pointed at this mirror with the printed block, as the program reads it."""
    raw = {**load_stack_config("dev"), **{k.removeprefix("kvm-kubeadm:"): v for k, v in served.stack_config.items()}}
    return parse(with_keys(raw, ssh_keys), "dev", PROJECT_DIR)


def write_certs_d(certs_d: Path, settings) -> None:
    """The certs.d files the program's packages stage writes on a node."""
    for path, content in certs_d_files(settings.registries).items():
        (certs_d / path).parent.mkdir(parents=True, exist_ok=True)
        (certs_d / path).write_text(content)


@dataclass
class Containerd:
    netns: Netns
    directory: Path
    certs_d: Path

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    def ctr(self, *args, in_netns: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [CTR, "--address", self.socket, *args]
        return self.netns.run(argv, timeout=timeout) if in_netns else run(list(map(str, argv)), timeout=timeout)

    def pull(self, ref: str, hosts_dir: Path) -> subprocess.CompletedProcess:
        # In the namespace: whoever fetches (containerd's transfer service) can reach nothing but the mirror.
        return self.ctr("images", "pull", "--hosts-dir", hosts_dir, "--platform", "linux/amd64", *NATIVE, ref,
                        in_netns=True)

    def content(self, digest: str) -> dict:
        return json.loads(ok(self.ctr("content", "get", digest)))

    def manifest(self, ref: str) -> dict:
        for line in ok(self.ctr("images", "ls")).splitlines()[1:]:
            columns = line.split()
            if columns and columns[0] == ref:
                return self.content(columns[2])
        raise AssertionError(f"containerd has no image {ref}")

    def config(self, ref: str) -> dict:
        return self.content(self.manifest(ref)["config"]["digest"])

    def rootfs(self, ref: str, writable: bool) -> Path:
        """The unpacked image: a native snapshot is a plain directory. Writable: a fresh copy of its own."""
        chain = None  # the snapshot of the top layer is named by the layers' chain ID
        for diff_id in self.config(ref)["rootfs"]["diff_ids"]:
            chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        # A view's mount is the committed snapshot's own directory (which the image keeps); `prepare` makes a
        # copy that ctr labels as a GC root. Either way, no GC can take it while the test uses it.
        key = f"kvmk-test-{time.monotonic_ns()}"
        (mount,) = json.loads(ok(self.ctr("snapshots", *NATIVE, "prepare" if writable else "view", "--mounts", key, chain)))
        return Path(mount["Source"])


@pytest.fixture(scope="module")
def containerd(netns, served, tmp_path_factory, ssh_keys) -> Iterator[Containerd]:
    directory = tmp_path_factory.mktemp("containerd")
    certs_d = directory / "certs.d"
    write_certs_d(certs_d, program_settings(served, ssh_keys))
    config = directory / "config.toml"
    config.write_text(f"""version = 3
root = "{directory / 'root'}"
state = "{directory / 'state'}"

[grpc]
  address = "{directory / 'containerd.sock'}"

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "{certs_d}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "native"

[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "native"

[plugins.'io.containerd.internal.v1.opt']
  path = "{directory / 'opt'}"

[plugins.'io.containerd.nri.v1.nri']
  disable = true
""")
    log = open(directory / "containerd.log", "wb")
    process = subprocess.Popen(["ip", "netns", "exec", netns.name, str(CONTAINERD), "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    handle = Containerd(netns, directory, certs_d)
    try:
        deadline = time.monotonic() + 60
        while handle.ctr("version").returncode != 0:
            assert process.poll() is None, f"containerd exited with {process.returncode}:\n{(directory / 'containerd.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "containerd did not answer within 60 s"
            time.sleep(0.25)
        yield handle
    finally:
        stop(process)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------
# what the manifests run


@dataclass(frozen=True)
class Container:
    source: str  # "kubeadm: Pod kube-apiserver", "kube-flannel.yml: DaemonSet kube-flannel-ds (init)", ...
    spec: dict
    pod_spec: dict

    @property
    def image(self) -> str:
        return self.spec["image"]


def attached_objects(dry_run_output: str) -> list[dict]:
    """The objects `kubeadm init --dry-run` prints after each "[dryrun] Attached object:" line."""
    objects = []
    for chunk in dry_run_output.split("[dryrun] Attached object:\n")[1:]:
        lines = []
        for line in chunk.splitlines():
            if line.startswith("["):
                break
            lines.append(line)
        objects.append(yaml.safe_load("\n".join(lines)))
    return objects


def containers_of(source: str, obj: dict) -> list[Container]:
    pod_spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    name = f"{source}: {obj['kind']} {obj['metadata']['name']}"
    return [Container(f"{name} (init)", c, pod_spec) for c in pod_spec.get("initContainers", [])] + [
        Container(name, c, pod_spec) for c in pod_spec["containers"]]


@dataclass
class Manifests:
    containers: list[Container]
    kubeadm_images: list[str]
    objects: list[dict]


@pytest.fixture(scope="module")
def manifests(served, netns, tmp_path_factory) -> Manifests:
    mirrors = served.stack_config["kvm-kubeadm:mirrors"]
    directory = tmp_path_factory.mktemp("kubeadm")
    config = directory / "kubeadm.yaml"
    config.write_text(yaml.safe_dump_all([
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
         "localAPIEndpoint": {"advertiseAddress": "192.0.2.20", "bindPort": 6443},
         "nodeRegistration": {"name": "cp-1", "criSocket": "unix:///run/containerd/containerd.sock"}},
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration", "kubernetesVersion": KUBE_VERSION,
         "imageRepository": mirrors["imageRepository"],
         "networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}},
    ]))
    # Offline (unshare -rn: nothing to reach), everything kubeadm writes goes to the dry-run directory.
    env = {**os.environ, "KUBEADM_INIT_DRYRUN_DIR": str(directory / "dry-run")}
    images = ok(run(["unshare", "-rn", str(KUBEADM), "config", "images", "list", "--config", str(config)])).split()
    output = ok(run(["unshare", "-rn", str(KUBEADM), "init", "--dry-run", "--skip-phases=preflight",
                     "--config", str(config)], env=env))
    static_pods = [yaml.safe_load(p.read_text()) for p in sorted((directory / "dry-run").glob("*.yaml"))]
    kubeadm_objects = [o for o in static_pods if isinstance(o, dict) and o.get("kind") == "Pod"]
    kubeadm_objects += attached_objects(output)
    flannel_url = mirrors["flannelManifest"].replace("{version}", FLANNEL_VERSION)
    flannel_objects = [o for o in yaml.safe_load_all(netns.fetch(flannel_url)) if o]

    def workloads(source: str, objects: list[dict]) -> list[Container]:
        return [c for o in objects if o.get("kind") in ("Pod", "DaemonSet", "Deployment") for c in containers_of(source, o)]

    flannel = workloads("kube-flannel.yml", flannel_objects)
    for container in flannel:
        # As the program's kustomization does with flannelRegistry: flannel's images move to the mirror.
        container.spec["image"] = container.spec["image"].replace("ghcr.io/flannel-io", mirrors["flannelRegistry"], 1)
    addon_objects, addons = [], []
    for key, version in (("metricsServerManifest", METRICS_SERVER_VERSION), ("localPathManifest", LOCAL_PATH_VERSION)):
        objects = [o for o in yaml.safe_load_all(netns.fetch(mirrors[key].replace("{version}", version))) if o]
        addon_objects += objects
        addons += workloads(key, objects)
    for container in addons:
        # As the program names them: metrics-server's image flat under imageRepository (as kubeadm names
        # coredns'); the provisioner's by its own docker.io name, which `registries` sends to the mirror.
        image = container.spec["image"].replace(METRICS_SERVER_IMAGE, f"{mirrors['imageRepository']}/metrics-server", 1)
        container.spec["image"] = fully_qualified(image)
    containers = workloads("kubeadm", kubeadm_objects) + flannel + addons
    objects = kubeadm_objects + flannel_objects + addon_objects
    return Manifests(containers, images, objects)


def fully_qualified(image: str) -> str:
    """An image name as containerd's CRI completes it: a name without a registry host is docker.io's."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


@pytest.fixture(scope="module")
def older_kubeadm_images(served, tmp_path_factory) -> list[str]:
    """What the kubeadm of each older version the kit serves (an upgrade starts at one of them) lists
    under the mirror: that version's own kubeadm, from the kit's package, as a node at it would ask."""
    images = []
    for version in KUBE_VERSIONS[1:]:
        debs = sorted((OUT / "www" / "kubernetes").glob(f"v*/deb/*/kubeadm_{version.removeprefix('v')}-*.deb"))
        assert len(debs) == 1, f"no single kubeadm {version} package in the kit: {debs} (tools/mirror-kit/build.sh)"
        root = tmp_path_factory.mktemp(f"kubeadm-{version}")
        ok(run(["dpkg-deb", "-x", str(debs[0]), str(root)]))
        images += ok(run(["unshare", "-rn", str(root / "usr" / "bin" / "kubeadm"), "config", "images", "list",
                          "--kubernetes-version", version, "--image-repository", served.registry])).split()
    return images


@pytest.fixture(scope="module")
def pulled(containerd, manifests, served, older_kubeadm_images) -> dict[str, subprocess.CompletedProcess]:
    refs = sorted(set(manifests.kubeadm_images) | {c.image for c in manifests.containers} | set(older_kubeadm_images)
                  # the upstream paths of CoreDNS and metrics-server, for a config that keeps registry.k8s.io's layout
                  | {f"{served.registry}/coredns/coredns:{PINS['MIRROR_COREDNS_VERSION']}",
                     f"{served.registry}/metrics-server/metrics-server:{METRICS_SERVER_VERSION}"}
                  # the provisioner at the kit's own path, and a ghcr.io name through its `registries` entry
                  | {f"{served.registry}/rancher/local-path-provisioner:{LOCAL_PATH_VERSION}",
                     f"ghcr.io/flannel-io/flannel:{FLANNEL_VERSION}"})
    pulls = {}
    for ref in refs:
        start = time.monotonic()
        pulls[ref] = containerd.pull(ref, containerd.certs_d)
        print(f"pulled {ref} in {time.monotonic() - start:.1f}s (rc {pulls[ref].returncode})")
    return pulls


# ---------------------------------------------------------------------------
# helpers on an unpacked image


def image_path(config: dict) -> str:
    env = dict(e.split("=", 1) for e in config["config"].get("Env", []))
    return env.get("PATH", "")


def resolve(root: Path, path: str, depth: int = 0) -> Path:
    """PATH inside ROOT, following symbolic links as the image sees them."""
    assert depth < 20, f"symlink loop at {path}"
    current = root
    for part in Path(path).relative_to("/").parts:
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            base = "/" if target.startswith("/") else "/" + str(current.relative_to(root))
            candidate = resolve(root, os.path.normpath(os.path.join(base, target)), depth + 1)
        current = candidate
    return current


def find_executable(root: Path, name: str, search: str) -> Optional[str]:
    """The image path `name` runs: itself if it has a slash, else the first match on the image's PATH."""
    candidates = [name] if "/" in name else [f"{d}/{name}" for d in search.split(":") if d]
    for candidate in candidates:
        path = resolve(root, candidate)
        if path.is_file() and path.stat().st_mode & 0o111:
            return candidate
    return None


def argv_of(container: Container, config: dict) -> list[str]:
    """What the container runs, by Kubernetes' rules: command replaces Entrypoint, args replace Cmd."""
    image = config["config"]
    if "command" in container.spec:
        return container.spec["command"] + container.spec.get("args", [])
    return (image.get("Entrypoint") or []) + container.spec.get("args", image.get("Cmd") or [])


def chroot(netns: Netns, root: Path, config: dict, argv: list, user: Optional[str] = None,
           env: Optional[dict[str, str]] = None, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run argv in the image root, with the image's PATH and `env`, inside the test namespace (as root, or as user)."""
    userspec = [f"--userspec={user}"] if user else []
    variables = [f"{name}={value}" for name, value in (env or {}).items()]
    return netns.run(["env", "-i", f"PATH={image_path(config)}", *variables, "chroot", *userspec, root, *argv],
                     timeout=timeout, **kwargs)


def mount_volumes(container: Container, root: Path, config_maps: dict[str, dict]) -> None:
    """Stand-ins for the container's volume mounts: ConfigMaps with their data, hostPath files, empty directories."""
    volumes = {v["name"]: v for v in container.pod_spec.get("volumes", [])}
    for mount in container.spec.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        volume = volumes[mount["name"]]
        if volume.get("hostPath", {}).get("type") in ("File", "FileOrCreate"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
            continue
        target.mkdir(parents=True, exist_ok=True)
        for key, value in config_maps.get(volume.get("configMap", {}).get("name"), {}).items():
            (target / key).write_text(value)


def config_maps_of(manifests: Manifests) -> dict[str, dict]:
    return {o["metadata"]["name"]: o.get("data", {}) for o in manifests.objects if o.get("kind") == "ConfigMap"}


def image_of(containerd: Containerd, ref: str, writable: bool = False) -> tuple[dict, Path]:
    return containerd.config(ref), containerd.rootfs(ref, writable)


# ---------------------------------------------------------------------------
# tests


def test_a_second_build_with_nothing_changed_does_nothing(built):
    result = run([str(KIT / "build-images.sh")], timeout=600)
    ok(result)
    log = result.stderr
    assert not re.search(r"building|pushed|registry storage:", log), log
    # Each version's four kube images, and etcd, coredns, pause, flannel's two and the two addons'.
    assert len(re.findall(r"image \S+: up to date", log)) == 4 * len(KUBE_VERSIONS) + 7, log


def test_the_namespace_reaches_nothing_but_the_mirror(netns):
    links = json.loads(ok(run(["ip", "-n", netns.name, "-j", "link"])))
    assert [link["ifname"] for link in links] == ["lo"], f"the test namespace must have no link out: {links}"
    for family in ("-4", "-6"):
        routes = json.loads(ok(run(["ip", "-n", netns.name, "-j", family, "route", "show", "table", "all"])))
        assert not [r for r in routes if r.get("dst") == "default"], f"a default route in {netns.name}: {routes}"


def test_serve_prints_the_stack_config_and_a_certificate_for_its_address(served):
    mirrors = served.stack_config["kvm-kubeadm:mirrors"]
    http = f"http://{ADDRESS}:{HTTP_PORT}"
    assert mirrors == {
        "kubePackages": f"{http}/kubernetes",
        "imageRepository": served.registry,
        "flannelManifest": f"{http}/flannel/{{version}}/kube-flannel.yml",
        "flannelRegistry": f"{served.registry}/flannel-io",
        "metricsServerManifest": f"{http}/metrics-server/{{version}}/components.yaml",
        "localPathManifest": f"{http}/local-path-provisioner/{{version}}/local-path-storage.yaml",
        "osApt": http,
        "containerdPackages": f"{http}/docker",
    }
    assert served.stack_config["kvm-kubeadm:registries"] == {
        served.registry: {"caFile": str(served.ca)},
        "docker.io": {"mirrors": [f"https://{served.registry}"]},
        "ghcr.io": {"mirrors": [f"https://{served.registry}"]},
    }
    # Only these two blocks: pasted into a stack file they replace no section the user has.
    assert set(served.stack_config) == {"kvm-kubeadm:mirrors", "kvm-kubeadm:registries"}
    # What the mirror holds is what the program installs when the stack does not say otherwise.
    assert Kubernetes().version == KUBE_VERSION.removeprefix("v") and Flannel().version == FLANNEL_VERSION
    assert (Addons().metrics_server_version, Addons().local_path_version) == (METRICS_SERVER_VERSION, LOCAL_PATH_VERSION)
    cert = served.directory / "pki" / "servers" / f"{ADDRESS}.crt"
    ok(run(["openssl", "verify", "-CAfile", str(served.ca), str(cert)]))
    text = ok(run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"]))
    assert f"IP Address:{ADDRESS}" in text


def test_the_program_accepts_the_printed_stack_config(served, ssh_keys):
    settings = program_settings(served, ssh_keys)
    mirrors = served.stack_config["kvm-kubeadm:mirrors"]
    assert settings.mirrors.image_repository == served.registry
    assert (settings.mirrors.metrics_server_manifest, settings.mirrors.local_path_manifest) == (
        mirrors["metricsServerManifest"], mirrors["localPathManifest"])
    kit = (f"https://{served.registry}",)
    assert [(r.host, r.mirrors, r.ca_pem) for r in settings.registries] == [
        (served.registry, (), served.ca.read_text()), ("docker.io", kit, None), ("ghcr.io", kit, None)]


def module_dir(module: str, version: str) -> Path:
    return Path(ok(run(["go", "env", "GOMODCACHE"])).strip()) / f"{module}@{version}"


def release_manifest(key: str) -> bytes:
    """What upstream publishes as that manifest, made from its module zip as its release does."""
    if key == "flannelManifest":
        return (module_dir("github.com/flannel-io/flannel", FLANNEL_VERSION) / "Documentation" / "kube-flannel.yml").read_bytes()
    if key == "localPathManifest":
        return (module_dir("github.com/rancher/local-path-provisioner", LOCAL_PATH_VERSION) / "deploy"
                / "local-path-storage.yaml").read_bytes()
    # metrics-server's Makefile (release-manifests), with the kubectl of the kit's own package build.
    kubectl = OUT / "build" / f"kubernetes-{KUBE_VERSION}" / "bin" / "kubectl"
    overlay = module_dir("sigs.k8s.io/metrics-server", METRICS_SERVER_VERSION) / "manifests" / "overlays" / "release"
    return ok(run(["unshare", "-rn", str(kubectl), "kustomize", str(overlay)])).encode()


@pytest.mark.parametrize("key, version, image", [
    ("flannelManifest", FLANNEL_VERSION, f"ghcr.io/flannel-io/flannel:{FLANNEL_VERSION}"),
    ("metricsServerManifest", METRICS_SERVER_VERSION, f"{METRICS_SERVER_IMAGE}:{METRICS_SERVER_VERSION}"),
    ("localPathManifest", LOCAL_PATH_VERSION, f"rancher/local-path-provisioner:{LOCAL_PATH_VERSION}"),
])
def test_the_served_manifests_are_the_pinned_ones(served, netns, key, version, image):
    served_manifest = netns.fetch(served.stack_config["kvm-kubeadm:mirrors"][key].replace("{version}", version))
    assert served_manifest == release_manifest(key)
    assert re.search(rf"^\s*image: {re.escape(image)}$", served_manifest.decode(), re.M), f"{key} does not name {image}"


def test_a_pull_without_the_kit_ca_is_refused(containerd, served, tmp_path):
    result = containerd.pull(f"{served.registry}/pause:{PINS['MIRROR_PAUSE_VERSION']}", tmp_path)
    assert result.returncode != 0
    assert "x509: certificate signed by unknown authority" in result.stdout + result.stderr, result.stderr


def test_containerd_pulls_every_image_the_manifests_name(pulled, manifests, served):
    assert len(manifests.kubeadm_images) == 7, manifests.kubeadm_images
    names = {ref.removeprefix(served.registry + "/").split(":")[0] for ref in pulled}
    assert {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "pause",
            "flannel-io/flannel", "flannel-io/flannel-cni-plugin", "coredns/coredns", "metrics-server",
            "metrics-server/metrics-server", "docker.io/rancher/local-path-provisioner",
            "ghcr.io/flannel-io/flannel"} <= names, names
    failed = {ref: r.stderr[-500:] for ref, r in pulled.items() if r.returncode != 0}
    assert not failed, failed
    # The namespace reaches nothing else: a docker.io or ghcr.io name came through its `registries` entry.
    sent_to_the_kit = {host for host, entry in served.stack_config["kvm-kubeadm:registries"].items()
                       if entry.get("mirrors") == [f"https://{served.registry}"]}
    for ref in pulled:
        assert ref.split("/")[0] in {served.registry, *sent_to_the_kit}, f"{ref} is not on the mirror"


def test_every_image_is_linux_amd64_with_the_executable_its_manifests_run(pulled, containerd, manifests):
    problems = []
    for container in manifests.containers:
        config, root = image_of(containerd, container.image)
        if (config.get("os"), config.get("architecture")) != ("linux", "amd64"):
            problems.append(f"{container.image}: platform {config.get('os')}/{config.get('architecture')}")
        argv = argv_of(container, config)
        if not argv:
            problems.append(f"{container.source} {container.spec['name']}: no command and no image Entrypoint")
            continue
        if find_executable(root, argv[0], image_path(config)) is None:
            problems.append(f"{container.source} {container.spec['name']}: {argv[0]} is not an executable on "
                            f"PATH={image_path(config)} in {container.image}")
    assert not problems, "\n".join(problems)


def test_the_image_configs_are_the_upstream_ones(pulled, containerd, served):
    """Entrypoint, command and user as the upstream images have them (Dockerfiles of pause, coredns, flannel,
    metrics-server, local-path-provisioner; go-runner)."""
    expected = {
        **{f"{command}:{version}": ([f"/usr/local/bin/{command}"], None, "") for command in KUBE_COMMANDS
           for version in KUBE_VERSIONS},
        f"etcd:{PINS['MIRROR_ETCD_IMAGE_TAG']}": (["/usr/local/bin/etcd"], None, ""),
        f"coredns:{PINS['MIRROR_COREDNS_VERSION']}": (["/coredns"], None, "65532:65532"),
        f"pause:{PINS['MIRROR_PAUSE_VERSION']}": (["/pause"], None, "65535:65535"),
        f"flannel-io/flannel:{FLANNEL_VERSION}": (["/opt/bin/flanneld"], None, ""),
        f"metrics-server:{METRICS_SERVER_VERSION}": (["/metrics-server"], None, "65534"),
        f"rancher/local-path-provisioner:{LOCAL_PATH_VERSION}": (None, ["local-path-provisioner"], ""),
    }
    for name, (entrypoint, cmd, user) in expected.items():
        image = containerd.config(f"{served.registry}/{name}")["config"]
        assert (image.get("Entrypoint"), image.get("Cmd"), image.get("User", "")) == (entrypoint, cmd, user), name
        assert image_path({"config": image}) == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", name


def test_older_versions_name_the_same_shared_images_and_their_kube_images_run_their_version(
        pulled, containerd, served, manifests, older_kubeadm_images, netns):
    """The kit builds one etcd, coredns and pause: an older version's kubeadm must name the same ones."""
    require(None if KUBE_VERSIONS[1:] else "tools/versions.env names no MIRROR_KUBE_UPGRADE_FROM")
    shared = {image for image in manifests.kubeadm_images if not image.split("/")[-1].startswith("kube-")}
    assert shared <= set(older_kubeadm_images), (shared, older_kubeadm_images)
    problems = []
    for version in KUBE_VERSIONS[1:]:
        for command in KUBE_COMMANDS:
            ref = f"{served.registry}/{command}:{version}"
            assert ref in older_kubeadm_images, (ref, older_kubeadm_images)
            config, root = image_of(containerd, ref)
            result = chroot(netns, root, config, [*config["config"]["Entrypoint"], "--version"])
            if result.returncode != 0 or result.stdout.strip() != f"Kubernetes {version}":
                problems.append(f"{ref}: {result.returncode} {result.stdout}{result.stderr}")
    assert not problems, "\n".join(problems)


def test_the_manifests_commands_run_in_their_images(pulled, containerd, manifests, netns):
    """Each daemon prints its pinned version; each init container's own cp command does its copy."""
    config_maps = config_maps_of(manifests)
    problems = []
    for container in manifests.containers:
        config, root = image_of(containerd, container.image, writable=True)
        argv = argv_of(container, config)
        name = os.path.basename(argv[0])
        if name == "cp":
            mount_volumes(container, root, config_maps)
            result = chroot(netns, root, config, argv)
            source, destination = argv[-2:]
            if result.returncode != 0:
                problems.append(f"{container.source}: {argv} failed: {result.stderr}")
            elif resolve(root, destination).read_bytes() != resolve(root, source).read_bytes():
                problems.append(f"{container.source}: {argv} did not copy {source}")
        else:
            flag = VERSION_FLAGS.get(name)
            if flag is None:
                problems.append(f"{container.source}: no version check for {argv[0]}")
                continue
            result = chroot(netns, root, config, [argv[0], flag])
            version = container.image.rsplit(":", 1)[1].removesuffix("-0").removeprefix("v")
            if result.returncode != 0 or version not in result.stdout + result.stderr:
                problems.append(f"{container.source}: {argv[0]} {flag} ({result.returncode}): {result.stdout}{result.stderr}")
    assert not problems, "\n".join(problems)


def test_the_flannel_cni_binary_speaks_the_manifests_cni_version(pulled, containerd, manifests, netns):
    net_conf = next(o for o in manifests.objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == "kube-flannel-cfg")
    wanted = json.loads(net_conf["data"]["cni-conf.json"])["cniVersion"]
    plugin = next(c for c in manifests.containers if "flannel-cni-plugin" in c.image)
    config, root = image_of(containerd, plugin.image)
    # The init container copies /flannel to the host's /opt/cni/bin; the runtime runs it there, on the host.
    result = run(["env", "-i", "CNI_COMMAND=VERSION", str(resolve(root, argv_of(plugin, config)[-2]))])
    assert wanted in json.loads(ok(result))["supportedVersions"]


def test_coredns_serves_port_53_as_its_own_non_root_user(pulled, containerd, manifests, netns):
    """The Deployment adds only NET_BIND_SERVICE and the image runs as 65532: the binary's file capability does it."""
    deployment = next(c for c in manifests.containers if c.spec["name"] == "coredns")
    config, root = image_of(containerd, deployment.image, writable=True)
    raw = os.getxattr(resolve(root, "/coredns"), "security.capability")
    magic, permitted = struct.unpack("<II", raw[:8])
    assert magic & 1 and permitted & (1 << CAP_NET_BIND_SERVICE), f"/coredns capability {raw.hex()}"
    assert deployment.spec["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    conf = deployment.spec["args"][deployment.spec["args"].index("-conf") + 1]
    (root / conf.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / conf.lstrip("/")).write_text(".:53 {\n    whoami\n}\n")  # kubeadm's Corefile needs an API server
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "env", "-i", f"PATH={image_path(config)}", "chroot",
         f"--userspec={config['config']['User']}", str(root), *argv_of(deployment, config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        query = struct.pack(">HHHHHH", 0x4B1D, 0x0100, 1, 0, 0, 0) + b"\x07example\x00" + struct.pack(">HH", 1, 1)
        ask = (f"import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); "
               f"s.sendto({query!r}, ('127.0.0.1', 53)); sys.stdout.buffer.write(s.recv(512))")
        deadline, answer = time.monotonic() + 30, b""
        while time.monotonic() < deadline and process.poll() is None:
            result = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c", ask], capture_output=True)
            if result.returncode == 0:
                answer = result.stdout
                break
            time.sleep(0.5)
        assert process.poll() is None, f"coredns exited:\n{process.stdout.read().decode()}"
        assert answer[:2] == b"\x4b\x1d" and answer[3] & 0x0F == 0, f"no DNS answer on port 53: {answer!r}"
    finally:
        stop(process)


def test_metrics_server_runs_as_its_manifests_non_root_user(pulled, containerd, manifests, netns):
    container = next(c for c in manifests.containers if c.spec["name"] == "metrics-server")
    user = container.spec["securityContext"]["runAsUser"]
    config, root = image_of(containerd, container.image)
    result = chroot(netns, root, config, [*config["config"]["Entrypoint"], "--version"], user=f"{user}:{user}")
    assert ok(result).strip() == METRICS_SERVER_VERSION


def test_the_provisioner_image_runs_its_helper_pods_scripts(pulled, containerd, manifests, netns):
    """The program runs the helper pod in the provisioner's own image; provisioner.go starts it as
    `/bin/sh /script/setup` (or teardown), the ConfigMap's scripts mounted at /script, VOL_DIR set."""
    provisioner = next(c for c in manifests.containers if c.spec["name"] == "local-path-provisioner")
    config, root = image_of(containerd, provisioner.image, writable=True)
    shell = chroot(netns, root, config, ["/bin/sh", "-c", "mkdir -p /tmp/x && chmod 0700 /tmp/x && rm -rf /tmp/x"])
    assert shell.returncode == 0 and not (root / "tmp" / "x").exists(), shell.stderr
    scripts = config_maps_of(manifests)["local-path-config"]
    (root / "script").mkdir()
    for name in ("setup", "teardown"):
        (root / "script" / name).write_text(scripts[name])
    volume = "/opt/local-path-provisioner/pvc-kvmk-test_default_data"
    ok(chroot(netns, root, config, ["/bin/sh", "/script/setup"], env={"VOL_DIR": volume}))
    assert (root / volume.lstrip("/")).stat().st_mode & 0o777 == 0o777
    ok(chroot(netns, root, config, ["/bin/sh", "/script/teardown"], env={"VOL_DIR": volume}))
    assert not (root / volume.lstrip("/")).exists()


def test_pause_runs_as_its_user(pulled, containerd, served, netns):
    config, root = image_of(containerd, f"{served.registry}/pause:{PINS['MIRROR_PAUSE_VERSION']}")
    result = chroot(netns, root, config, [*config["config"]["Entrypoint"], "-v"], user=config["config"]["User"])
    assert f"v{PINS['MIRROR_PAUSE_VERSION']}" in ok(result)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize("image", ["kube-proxy", "flannel"])
def test_iptables_follows_the_backend_kubelet_marked(pulled, containerd, manifests, netns, image, backend):
    """As upstream's iptables-wrapper: the chain kubelet leaves in one backend decides which one the image uses."""
    container = next(c for c in manifests.containers
                     if c.image.split("/")[-1].startswith(f"{image}:") and "(init)" not in c.source)
    config, root = image_of(containerd, container.image, writable=True)
    mount_volumes(container, root, config_maps_of(manifests))  # /run/xtables.lock, as the manifests mount it

    def fresh_netns(script: str) -> subprocess.CompletedProcess:
        # A namespace of its own (inside the test's): the netfilter state of each case starts empty.
        return netns.run(["unshare", "--net", "env", "-i", f"PATH={image_path(config)}", "sh", "-euc", script])

    r = shlex.quote(str(root))
    result = ok(fresh_netns(
        f"chroot {r} iptables-{backend} -t mangle -N KUBE-IPTABLES-HINT\n"
        f"chroot {r} iptables-save -t mangle\n"
        f"printf '*nat\\n:KVMK-TEST - [0:0]\\n-A KVMK-TEST -p tcp --dport 80 -j RETURN\\nCOMMIT\\n' | chroot {r} iptables-restore --noflush\n"
        f"chroot {r} iptables-{backend}-save -t nat\n"
        f"chroot {r} ip6tables-save -t mangle >/dev/null\n"
        f"chroot {r} nft list ruleset\n"
    ))
    assert ":KUBE-IPTABLES-HINT" in result and "-A KVMK-TEST -p tcp -m tcp --dport 80 -j RETURN" in result, result
    for command in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"):
        assert os.readlink(root / "usr" / "sbin" / command) == f"xtables-{backend}-multi", command
    assert ok(chroot(netns, root, config, ["conntrack", "--version"])).startswith("conntrack v")
