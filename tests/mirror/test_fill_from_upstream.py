"""tools/mirror-kit/fill-from-upstream.sh, run against a stand-in for the upstream locations.

The real upstream hosts (pkgs.k8s.io, download.docker.com, registry.k8s.io, ghcr.io, docker.io, github.com,
raw.githubusercontent.com, deb.debian.org) are never contacted: this machine reaches none of them. The stand-in
is the mirror that tools/mirror-kit/build.sh built from source in .cache/mirror, served by serve.sh on 192.0.2.10
inside a network namespace the test creates, whose only link is lo. Its HTTP server holds, below each upstream
variable, the paths the real host holds there (KUBE_UPSTREAM/v1.36/deb/, DOCKER_UPSTREAM/linux/debian,
.../<version>/kube-flannel.yml, components.yaml and local-path-storage.yaml, Debian's archive); its TLS
registry holds registry.k8s.io's, ghcr.io's and docker.io's repository paths, and crane trusts its CA through
SSL_CERT_FILE. Headlamp's image is the one the kit cannot build, so a second serve.sh on 192.0.2.12, with the
same CA and a registry of its own, stands in for its upstream and holds a small image pushed by the test.
fill-from-upstream.sh runs inside that namespace with every upstream pointed at a stand-in and --out a
temporary directory; Go builds crane and the registry there from the module cache (GOPROXY=file://...).

Checked: both republished repositories verify under the filled mirror's own new key (not the stand-in's)
and carry the same packages, versions and .deb hashes (the kube packages at every version the kit serves,
MIRROR_KUBE_UPGRADE_FROM's too); apt in a Debian 12 root installs kubeadm, kubelet,
kubectl and containerd.io from the filled copy, OS packages included, through the packages stage's own
functions; every image tag the kit holds, and the Headlamp stand-in's, is in the filled registry with the same
digest, also as serve.sh serves the filled directory; the three manifests and Debian's index files are
byte-identical; a second run, with the upstreams given as options, redoes nothing.

Not covered, because the stand-in is not the real thing: multi-platform image indexes (crane copy
--platform linux/amd64 picks one image out of an index; the kit's images are single manifests), HTTP
redirects and registry token authentication, and what the real repositories hold (other revisions,
cri-tools should a kubeadm depend on it).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from components.scripts import render
from tests.mirror import (
    KUBE_VERSIONS, Node, debian_root_tar, kit_served, netns, registry_tags, served_root, share_mirror, stdout_of,
)
from tests.mirror.test_apt_repos import (
    CONTAINERD_VERSION, DOCKER_REPO, KUBE_REPO, KUBE_VERSION, MIRROR_URL, PINS, PORT,
)
from tests.mirror.test_os_mirror import GUEST_SOURCES, INSECURE, ROOT_TAR
from tests.program import PROJECT_DIR
from tests.pulumi_cli import require

pytestmark = pytest.mark.mirror

FILL = PROJECT_DIR / "tools" / "mirror-kit" / "fill-from-upstream.sh"
KIT = PROJECT_DIR / ".cache" / "mirror"
# TEST-NET-1: on lo of the test's namespace, nowhere else
STANDIN, FILLED, HEADLAMP_STANDIN = "192.0.2.10", "192.0.2.11", "192.0.2.12"
HTTP_PORT, REGISTRY_PORT = 8080, 5000
STANDIN_HTTP, STANDIN_REGISTRY = f"http://{STANDIN}:{HTTP_PORT}", f"{STANDIN}:{REGISTRY_PORT}"
HEADLAMP_REGISTRY = f"{HEADLAMP_STANDIN}:{REGISTRY_PORT}"
HEADLAMP_IMAGE = f"headlamp-k8s/headlamp:{PINS['MIRROR_HEADLAMP_VERSION']}"
UPSTREAMS = {
    "KUBE_UPSTREAM": f"{STANDIN_HTTP}/kubernetes",
    "DOCKER_UPSTREAM": f"{STANDIN_HTTP}/docker",
    "IMAGES_UPSTREAM": STANDIN_REGISTRY,
    "FLANNEL_IMAGES_UPSTREAM": STANDIN_REGISTRY,
    "LOCAL_PATH_IMAGES_UPSTREAM": STANDIN_REGISTRY,
    "HEADLAMP_IMAGES_UPSTREAM": HEADLAMP_REGISTRY,
    "FLANNEL_UPSTREAM": f"{STANDIN_HTTP}/flannel/{{version}}/kube-flannel.yml",
    "METRICS_SERVER_UPSTREAM": f"{STANDIN_HTTP}/metrics-server/{{version}}/components.yaml",
    "LOCAL_PATH_UPSTREAM": f"{STANDIN_HTTP}/local-path-provisioner/{{version}}/local-path-storage.yaml",
}
# The same upstreams as fill-from-upstream.sh's options.
OPTIONS = {"KUBE_UPSTREAM": "--kube-upstream", "DOCKER_UPSTREAM": "--docker-upstream",
           "IMAGES_UPSTREAM": "--images-upstream", "FLANNEL_IMAGES_UPSTREAM": "--flannel-images-upstream",
           "LOCAL_PATH_IMAGES_UPSTREAM": "--local-path-images-upstream",
           "HEADLAMP_IMAGES_UPSTREAM": "--headlamp-images-upstream", "FLANNEL_UPSTREAM": "--flannel-upstream",
           "METRICS_SERVER_UPSTREAM": "--metrics-server-upstream", "LOCAL_PATH_UPSTREAM": "--local-path-upstream"}
DEBIAN_UPSTREAMS = {"DEBIAN_MIRROR": f"{STANDIN_HTTP}/debian", "DEBIAN_SECURITY_MIRROR": f"{STANDIN_HTTP}/debian-security"}
KUBE_DIR = KUBE_REPO.removeprefix(f"{MIRROR_URL}/").rstrip("/")  # kubernetes/v1.36/deb
DOCKER_DIR = DOCKER_REPO.removeprefix(f"{MIRROR_URL}/")  # docker/linux/debian
FLANNEL_MANIFEST = f"flannel/{PINS['MIRROR_FLANNEL_VERSION']}/kube-flannel.yml"
MANIFESTS = (FLANNEL_MANIFEST, f"metrics-server/{PINS['MIRROR_METRICS_SERVER_VERSION']}/components.yaml",
             f"local-path-provisioner/{PINS['MIRROR_LOCAL_PATH_VERSION']}/local-path-storage.yaml")
# (signed directory, its armored key) of each republished repository, below www/.
REPOSITORIES = {
    "kube": (KUBE_DIR, f"{KUBE_DIR}/Release.key"),
    "docker": (f"{DOCKER_DIR}/dists/bookworm", f"{DOCKER_DIR}/gpg"),
}
# What the stand-in needs of the built kit (tools/mirror-kit/build.sh).
KIT_PARTS = (
    f"www/{KUBE_DIR}/InRelease", f"www/{DOCKER_DIR}/dists/bookworm/InRelease", *(f"www/{m}" for m in MANIFESTS),
    "www/debian/dists/bookworm/InRelease", "www/debian-security/dists/bookworm-security/InRelease",
    "registry/docker/registry/v2/repositories", "bin/registry",
)


def missing_prerequisite() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (ip netns, chroot, mmdebstrap root mode)"
    tools = ("ip", "unshare", "chroot", "mmdebstrap", "go", "gpg", "gpgv", "apt-get", "curl")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: run tools/install-e2e-deps.sh (Go: see tools/TOOLCHAIN.md)"
    unbuilt = [part for part in KIT_PARTS if not (KIT / part).exists()]
    if unbuilt:
        return f".cache/mirror lacks {', '.join(unbuilt)}: build the kit first (tools/mirror-kit/build.sh)"
    return None


@dataclass
class Upstream:
    netns: str
    directory: Path  # serve.sh's directory: the kit's www, registry and tools, its own CA and logs
    stack_config: dict
    headlamp_directory: Path  # the Headlamp stand-in's: its own registry storage, the same CA
    headlamp_digest: str

    @property
    def ca(self) -> Path:
        return self.directory / "pki" / "ca.crt"


@dataclass
class Fill:
    out: Path
    result: subprocess.CompletedProcess

    def www(self, path: str) -> Path:
        return self.out / "www" / path


def headlamp_standin(directory: Path, ca_dir: Path) -> Path:
    """A serve.sh directory of its own for Headlamp's upstream: the kit's tools, the stand-in's CA (one
    SSL_CERT_FILE trusts both) and an empty registry storage, so the built kit's is never written to."""
    directory.mkdir(parents=True)
    (directory / "bin").symlink_to(KIT / "bin")
    (directory / "pki").symlink_to(ca_dir)
    (directory / "registry" / "docker" / "registry" / "v2" / "repositories").mkdir(parents=True)
    return directory


def push_headlamp_standin(namespace: str, ca: Path, workdir: Path) -> str:
    """The kit cannot build Headlamp's image (the module proxy refuses its Go backend), so a small image of
    the test's own (one file, linux/amd64) stands for it in its upstream; returns its digest."""
    layer = workdir / "headlamp-standin.tar"
    with tarfile.open(layer, "w") as tar:
        content = b"stand-in for ghcr.io/headlamp-k8s/headlamp in tests/mirror/test_fill_from_upstream.py\n"
        member = tarfile.TarInfo("headlamp-standin")
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
    env = {**os.environ, "SSL_CERT_FILE": str(ca)}
    crane = ["ip", "netns", "exec", namespace, KIT / "bin" / "crane"]
    ref = f"{HEADLAMP_REGISTRY}/{HEADLAMP_IMAGE}"
    stdout_of([*crane, "append", "--oci-empty-base", "-f", layer, "-t", ref], env=env)
    stdout_of([*crane, "mutate", ref, "--set-platform", "linux/amd64", "-t", ref], env=env)
    return stdout_of([*crane, "digest", ref], env=env).strip()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[Upstream]:
    """The built kit served by serve.sh on STANDIN, and the Headlamp stand-in on HEADLAMP_STANDIN, in a
    namespace whose only link is lo (FILLED is there too)."""
    require(missing_prerequisite())
    root = tmp_path_factory.mktemp("standin")
    directory = share_mirror(KIT, root / "mirror")
    try:
        with netns("kvmk-fill", f"{STANDIN}/32", f"{FILLED}/32", f"{HEADLAMP_STANDIN}/32") as name:
            with kit_served(directory, name, STANDIN, HTTP_PORT, REGISTRY_PORT) as config:
                headlamp = headlamp_standin(root / "headlamp", directory / "pki")
                with kit_served(headlamp, name, HEADLAMP_STANDIN, HTTP_PORT, REGISTRY_PORT):
                    digest = push_headlamp_standin(name, directory / "pki" / "ca.crt", root)
                    yield Upstream(name, directory, config, headlamp, digest)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_fill(upstream: Upstream, out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """fill-from-upstream.sh --out OUT ARGS... in the namespace, trusting the stand-in's CA, Go modules from the
    cache (the namespace reaches no Go proxy); prints how long it took."""
    modcache = stdout_of(["go", "env", "GOMODCACHE"]).strip()
    environment = {**os.environ, **env, "SSL_CERT_FILE": str(upstream.ca),
                   "GOPROXY": f"file://{modcache}/cache/download"}
    start = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", upstream.netns, "nice", "-n", "10", str(FILL), "--out", str(out), *args],
        capture_output=True, text=True, env=environment, timeout=3600, check=False,
    )
    print(f"fill-from-upstream.sh {' '.join(args)}: {time.monotonic() - start:.1f}s (exit {result.returncode})")
    return result


@pytest.fixture(scope="module")
def filled(upstream: Upstream) -> Iterator[Fill]:
    """A fresh mirror directory filled from the stand-in, the upstreams given in the environment. Not
    under pytest's temp root (mode 0700): build-os-mirror.sh's apt downloads as _apt, which must reach it."""
    parent = Path(tempfile.mkdtemp(prefix="kvmk-fill-"))
    parent.chmod(0o755)
    out = parent / "mirror"
    try:
        result = run_fill(upstream, out, env={**UPSTREAMS, **DEBIAN_UPSTREAMS})
        assert result.returncode == 0, f"fill-from-upstream.sh failed ({result.returncode}):\n{result.stderr[-6000:]}"
        yield Fill(out, result)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def refill(upstream: Upstream, filled: Fill) -> Fill:
    """The same directory filled again, the upstreams given as options this time."""
    options = [arg for name, value in UPSTREAMS.items() for arg in (OPTIONS[name], value)]
    return Fill(filled.out, run_fill(upstream, filled.out, *options, env=DEBIAN_UPSTREAMS))


@pytest.fixture(scope="module")
def installed(filled: Fill, tmp_path_factory) -> Iterator[tuple[Node, subprocess.CompletedProcess]]:
    """The filled www served in a namespace of its own; a minbase Debian 12 root with the guest's sources
    runs the packages stage's OS mirror switch and installs with nothing but the filled copy."""
    workdir = tmp_path_factory.mktemp("debian-root")
    with served_root(filled.out / "www", debian_root_tar(ROOT_TAR, "--variant=minbase"), "kvmk-filled", PORT, workdir) as node:
        (node.root / "etc" / "apt" / "sources.list").write_text("\n".join(GUEST_SOURCES) + "\n")
        for lists in (node.root / "var" / "lib" / "apt" / "lists").glob("*_*"):
            lists.unlink()
        policy = node.root / "usr" / "sbin" / "policy-rc.d"  # no daemon starts inside the root
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        params = {
            "OS_APT_MIRROR": MIRROR_URL, "KUBE_VERSION": KUBE_VERSION.removeprefix("v"), "KUBE_REPO": KUBE_REPO,
            "CONTAINERD_SOURCE": "docker", "CONTAINERD_VERSION": CONTAINERD_VERSION.removeprefix("v"),
            "CONTAINERD_REPO": DOCKER_REPO.removesuffix("/debian"),
        }
        (node.root / "tmp" / "packages.sh").write_text(render("packages", "k8smaster", params))
        start = time.monotonic()
        result = node.sh("KVMK_SOURCE_ONLY=1; source /tmp/packages.sh; set_os_mirror; ensure_apt_lists; "
                         "install_missing ca-certificates curl gpg; install_kube_packages; install_containerd_package")
        print(f"install from the filled copy: {time.monotonic() - start:.1f}s")
        yield node, result


# ---------------------------------------------------------------------------
# helpers


@pytest.fixture
def gpg_home(tmp_path) -> Path:
    """A gpg home of the test's own (gpg never touches ~/.gnupg here)."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    return home


def fingerprint(armored_key: Path, home: Path) -> str:
    listing = stdout_of(["gpg", "--homedir", home, "--batch", "--show-keys", "--with-colons", armored_key])
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def verifies(inrelease: Path, armored_key: Path, home: Path) -> subprocess.CompletedProcess:
    keyring = home / f"{hashlib.sha256(str(armored_key).encode()).hexdigest()[:16]}.gpg"
    stdout_of(["gpg", "--homedir", home, "--batch", "--yes", "--dearmor", "-o", keyring, armored_key])
    return subprocess.run(["gpgv", "--homedir", str(home), "--keyring", str(keyring), str(inrelease)],
                          capture_output=True, text=True)


def packages_of(signed_dir: Path) -> dict[tuple[str, str], str]:
    """(Package, Version) -> SHA256 of the Packages index under a signed directory (a package may
    come at several versions)."""
    index = next(signed_dir.glob("**/Packages"))
    stanzas = [dict(re.findall(r"^([\w-]+): (.*)$", s, re.M)) for s in index.read_text().split("\n\n") if s.strip()]
    return {(s["Package"], s["Version"]): s["SHA256"] for s in stanzas}


def relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# ---------------------------------------------------------------------------
# tests


def test_the_namespace_has_no_link_but_loopback(upstream):
    links = stdout_of(["ip", "-n", upstream.netns, "-o", "link"])
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    for family in ("-4", "-6"):
        routes = stdout_of(["ip", "-n", upstream.netns, family, "route", "show", "table", "all"])
        assert "default" not in routes, routes


def test_the_fill_took_each_part_from_the_stand_in(filled, upstream):
    http = (upstream.directory / "run" / "http.log").read_text()
    for path in (f"/{KUBE_DIR}/Release.key", f"/{KUBE_DIR}/InRelease", f"/{DOCKER_DIR}/gpg",
                 f"/{DOCKER_DIR}/dists/bookworm/InRelease", *(f"/{m}" for m in MANIFESTS),
                 "/debian/dists/bookworm/InRelease", "/debian-security/dists/bookworm-security/InRelease"):
        assert f'"GET {path} HTTP/1.1" 200' in http, f"no GET {path} in the stand-in's log"
    assert re.search(rf'"GET /{KUBE_DIR}/amd64/kubeadm_[^ ]*\.deb HTTP/1.1" 200', http)
    registry = (upstream.directory / "run" / "registry.log").read_text()
    for version in KUBE_VERSIONS:
        assert f'"GET /v2/kube-apiserver/manifests/{version} HTTP/2.0" 200' in registry, version
    for image in (f"flannel-io/flannel:{PINS['MIRROR_FLANNEL_VERSION']}",
                  f"metrics-server/metrics-server:{PINS['MIRROR_METRICS_SERVER_VERSION']}",
                  f"rancher/local-path-provisioner:{PINS['MIRROR_LOCAL_PATH_VERSION']}"):
        path, tag = image.split(":")
        assert f'"GET /v2/{path}/manifests/{tag} HTTP/2.0" 200' in registry, image


@pytest.mark.parametrize("repository", sorted(REPOSITORIES))
def test_the_republished_repository_is_signed_by_the_filled_mirrors_own_key(filled, repository, gpg_home):
    signed, key = REPOSITORIES[repository]
    new, old = fingerprint(filled.www(key), gpg_home), fingerprint(KIT / "www" / key, gpg_home)
    assert new != old, "the filled repository still carries the upstream's key"
    keys = stdout_of(["gpg", "--homedir", filled.out / "keys", "--batch", "--list-keys", "--with-colons"])
    assert f"fpr:::::::::{new}:" in keys, "the published key is not the one in the mirror's keys/"
    verified = verifies(filled.www(f"{signed}/InRelease"), filled.www(key), gpg_home)
    assert verified.returncode == 0, verified.stderr
    refused = verifies(filled.www(f"{signed}/InRelease"), KIT / "www" / key, gpg_home)
    assert refused.returncode != 0, "the upstream's key verifies the republished InRelease"


@pytest.mark.parametrize("repository", sorted(REPOSITORIES))
def test_the_republished_repository_carries_the_same_packages(filled, repository):
    signed, _ = REPOSITORIES[repository]
    packages = packages_of(filled.www(signed))
    assert packages == packages_of(KIT / "www" / signed)
    assert {"kube": {"kubeadm", "kubelet", "kubectl", "kubernetes-cni"}, "docker": {"containerd.io"}}[repository] == {
        name for name, _ in packages}
    if repository == "kube":
        kubeadms = {version.split("-")[0] for name, version in packages if name == "kubeadm"}
        assert kubeadms == {version.removeprefix("v") for version in KUBE_VERSIONS}, kubeadms


def test_the_packages_stage_installs_from_the_filled_copy(installed):
    node, result = installed
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert not INSECURE.search(result.stdout + result.stderr), result.stdout + result.stderr
    assert node.out("apt-mark showhold").split() == ["containerd.io", "kubeadm", "kubectl", "kubelet"]
    assert node.out("kubeadm version -o short") == KUBE_VERSION
    assert node.out("kubelet --version") == f"Kubernetes {KUBE_VERSION}"
    assert node.out("containerd --version").split()[2] == CONTAINERD_VERSION
    (cni,) = [version for name, version in packages_of(KIT / "www" / KUBE_DIR) if name == "kubernetes-cni"]
    assert node.out("dpkg-query -W -f='${Version}' kubernetes-cni") == cni


def test_apt_read_every_index_from_the_filled_copy(installed):
    node, _ = installed
    lists = node.out("ls /var/lib/apt/lists").split()
    for suite in ("debian_dists_bookworm_", "debian_dists_bookworm-updates_", "debian-security_dists_bookworm-security_",
                  f"{KUBE_DIR.replace('/', '_')}_", f"{DOCKER_DIR.replace('/', '_')}_dists_bookworm_"):
        assert f"{MIRROR_URL.removeprefix('http://').replace('/', '_')}_{suite}InRelease" in lists, (suite, lists)


def test_every_image_the_kit_holds_and_headlamps_is_filled_with_the_same_digest(filled, upstream):
    kit = registry_tags(KIT)
    assert {"coredns/coredns:" + PINS["MIRROR_COREDNS_VERSION"], "coredns:" + PINS["MIRROR_COREDNS_VERSION"],
            "metrics-server/metrics-server:" + PINS["MIRROR_METRICS_SERVER_VERSION"],
            "metrics-server:" + PINS["MIRROR_METRICS_SERVER_VERSION"],
            "rancher/local-path-provisioner:" + PINS["MIRROR_LOCAL_PATH_VERSION"]} <= set(kit)
    filled_tags = registry_tags(filled.out)
    assert filled_tags.get(HEADLAMP_IMAGE) == upstream.headlamp_digest, "Headlamp's image is not the stand-in's"
    assert filled_tags == {**kit, HEADLAMP_IMAGE: upstream.headlamp_digest}


def test_serve_serves_the_filled_mirror_with_the_same_stack_config(filled, upstream):
    """serve.sh runs unchanged on the filled directory; crane, trusting its CA, gets every digest the kit holds."""
    with kit_served(filled.out, upstream.netns, FILLED, HTTP_PORT, REGISTRY_PORT) as config:
        as_standin = str(config).replace(FILLED, STANDIN).replace(str(filled.out), str(upstream.directory))
        assert as_standin == str(upstream.stack_config)
        env = {**os.environ, "SSL_CERT_FILE": str(filled.out / "pki" / "ca.crt")}
        for ref, digest in sorted(registry_tags(filled.out).items()):
            served = stdout_of(["ip", "netns", "exec", upstream.netns, filled.out / "bin" / "crane", "digest",
                                f"{FILLED}:{REGISTRY_PORT}/{ref}"], env=env)
            assert served.strip() == digest, ref


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_the_manifest_is_byte_identical(filled, manifest):
    assert filled.www(manifest).read_bytes() == (KIT / "www" / manifest).read_bytes()


def test_the_debian_part_is_the_kits(filled):
    """build-os-mirror.sh, called by the fill: the same .debs and Debian's own signed index files."""
    for root in ("debian", "debian-security"):
        assert relative_files(filled.www(root)) == relative_files(KIT / "www" / root), root
    for inrelease in ("debian/dists/bookworm/InRelease", "debian-security/dists/bookworm-security/InRelease"):
        assert filled.www(inrelease).read_bytes() == (KIT / "www" / inrelease).read_bytes(), inrelease


def test_a_second_run_with_the_upstreams_as_options_redoes_nothing(refill, filled):
    assert refill.result.returncode == 0, f"second run failed ({refill.result.returncode}):\n{refill.result.stderr[-6000:]}"
    log = refill.result.stderr
    assert not re.search(r"apt-get download|indexed \d|copied from|building|downloading", log), log
    assert log.count("published repository up to date") == 2, log
    # One line an image: coredns/coredns and its alias coredns are one, metrics-server's two tags too.
    assert len(re.findall(r"image \S+: up to date", log)) == len(registry_tags(refill.out)) - 2, log
    for manifest in MANIFESTS:
        assert f"www/{manifest}: up to date" in log, manifest
    assert "[build-os-mirror] up to date" in log, log
    for name, value in UPSTREAMS.items():
        assert value in log, f"{name} as an option did not reach the script"
