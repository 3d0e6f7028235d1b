"""The offline mirror's apt repositories, installed from with nothing else reachable.

tools/mirror-kit/build-debs.sh builds (or, by its stamps, keeps) the two signed
repositories in .cache/mirror/www; the kube one holds kubeadm, kubelet and kubectl
at every version the kit serves (the default and the ones an upgrade starts from).
This module serves that directory with
Python's http.server on 127.0.0.1 inside a network namespace it creates, and
runs apt in a Debian 12 root (mmdebstrap, cached in .cache/mirror-test/)
chrooted into the same namespace, whose only link is lo: the mirror is the one
thing apt can reach. The root's Debian sources are emptied; what the packages
need from the OS (iptables, mount, curl, gpg) is in its base, as on a node.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Optional

import pytest

from components.scripts import render
from tests.mirror import KUBE_VERSIONS, PINS, Node, debian_root_tar, run_kit_script, served_root
from tests.pulumi_cli import require

pytestmark = pytest.mark.mirror

PROJECT_DIR = Path(__file__).resolve().parents[2]
BUILD_DEBS = PROJECT_DIR / "tools" / "mirror-kit" / "build-debs.sh"
WWW = PROJECT_DIR / ".cache" / "mirror" / "www"
KUBE_VERSION = PINS["MIRROR_KUBE_VERSION"]  # v1.36.3
CONTAINERD_VERSION = PINS["MIRROR_CONTAINERD_VERSION"]
RUNC_VERSION = PINS["MIRROR_RUNC_VERSION"]
CNI_DEB_VERSION = f"{PINS['MIRROR_CNI_VERSION'].removeprefix('v')}-{PINS['MIRROR_CNI_DEB_REVISION']}"
CONTAINERD_DEB_VERSION = (  # 2.2.9-1~debian.12~bookworm
    f"{CONTAINERD_VERSION.removeprefix('v')}-{PINS['MIRROR_CONTAINERD_DEB_REVISION']}"
    f"~{PINS['MIRROR_DOCKER_DISTRO']}.{PINS['MIRROR_DOCKER_DISTRO_ID']}~{PINS['MIRROR_DOCKER_SUITE']}"
)

BASE_PACKAGES = ("ca-certificates", "curl", "gpg", "iptables", "mount")
ROOT_TAR = (
    PROJECT_DIR / ".cache" / "mirror-test"
    / f"debian-12-minbase-{hashlib.sha256(','.join(BASE_PACKAGES).encode()).hexdigest()[:12]}.tar"
)
PORT = 8080
MIRROR_URL = f"http://127.0.0.1:{PORT}"
KUBE_MINOR = f"v{'.'.join(KUBE_VERSION.removeprefix('v').split('.')[:2])}"  # v1.36: one repository for its releases
KUBE_REPO = f"{MIRROR_URL}/kubernetes/{KUBE_MINOR}/deb/"
DOCKER_REPO = f"{MIRROR_URL}/docker/linux/debian"


def missing_prerequisite() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (ip netns, chroot, mmdebstrap root mode)"
    missing = [tool for tool in ("ip", "unshare", "chroot", "mmdebstrap", "go", "gpg", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: run tools/install-e2e-deps.sh (Go: see tools/TOOLCHAIN.md)"
    return None


@pytest.fixture(scope="module")
def repos() -> Path:
    require(missing_prerequisite())
    run_kit_script(BUILD_DEBS, timeout=3600)
    return WWW


@pytest.fixture(scope="module")
def node(repos: Path, tmp_path_factory) -> Iterator[Node]:
    """The mirror served in a fresh namespace, and a fresh Debian root in it with no Debian archive."""
    tar = debian_root_tar(ROOT_TAR, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}")
    with served_root(repos, tar, "kvmk-mirror", PORT, tmp_path_factory.mktemp("debian-root")) as served:
        (served.root / "etc" / "apt" / "sources.list").write_text("")
        yield served


@pytest.fixture(scope="module")
def kube_install(node: Node) -> subprocess.CompletedProcess:
    """The packages stage's own install_kube_packages, pointed at the mirror."""
    params = {
        "KUBE_VERSION": KUBE_VERSION.removeprefix("v"),
        "KUBE_REPO": KUBE_REPO,
        "IMAGE_REPOSITORY": "registry.k8s.io",
        "OS_APT_MIRROR": "",
    }
    (node.root / "tmp" / "packages.sh").write_text(render("packages", "k8smaster", params))
    return node.sh("KVMK_SOURCE_ONLY=1; source /tmp/packages.sh; install_kube_packages")


@pytest.fixture(scope="module")
def containerd_install(node: Node) -> subprocess.CompletedProcess:
    """Docker's documented apt setup, with the mirror's URL."""
    return node.sh(f"""
        install -m 0755 -d /etc/apt/keyrings
        curl -fsSL {DOCKER_REPO}/gpg -o /etc/apt/keyrings/docker.asc
        chmod a+r /etc/apt/keyrings/docker.asc
        echo "deb [signed-by=/etc/apt/keyrings/docker.asc] {DOCKER_REPO} bookworm stable" \\
          >/etc/apt/sources.list.d/docker.list
        apt-get update
        apt-get install -y containerd.io
    """)


def test_the_namespace_has_no_link_but_loopback(node):
    links = subprocess.run(["ip", "-n", node.netns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":")[1].strip() for line in links.splitlines()]
    assert names == ["lo"], f"the test namespace must reach nothing but the mirror, has {names}"


def test_the_packages_stage_installs_the_kube_packages_from_the_mirror(kube_install):
    assert kube_install.returncode == 0, f"install_kube_packages failed:\n{kube_install.stdout}\n{kube_install.stderr}"


def test_the_kube_repository_indexes_every_kit_version_and_one_kubernetes_cni(repos):
    index = (repos / KUBE_REPO.removeprefix(f"{MIRROR_URL}/") / "Packages").read_text()
    stanzas = [dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M)) for stanza in index.split("\n\n") if stanza.strip()]
    listed = sorted((stanza["Package"], stanza["Version"]) for stanza in stanzas)
    revision = PINS["MIRROR_KUBE_DEB_REVISION"]
    assert listed == sorted([(name, f"{version.removeprefix('v')}-{revision}")
                             for name in ("kubeadm", "kubectl", "kubelet") for version in KUBE_VERSIONS]
                            + [("kubernetes-cni", CNI_DEB_VERSION)]), listed


def test_the_packages_stage_finds_each_kit_version_by_its_number(node, kube_install):
    """kubernetes.version 1.36.2 gets 1.36.2's packages, 1.36.3 (the default) its own, and 1.36 the newest."""
    minor = KUBE_MINOR.removeprefix("v")
    found = {version: node.out(f"KVMK_SOURCE_ONLY=1; source /tmp/packages.sh; newest_matching kubeadm {version}")
             for version in [v.removeprefix("v") for v in KUBE_VERSIONS] + [minor]}
    revision = PINS["MIRROR_KUBE_DEB_REVISION"]
    assert found == {**{v.removeprefix("v"): f"{v.removeprefix('v')}-{revision}" for v in KUBE_VERSIONS},
                     minor: f"{KUBE_VERSION.removeprefix('v')}-{revision}"}


def test_kubeadm_is_the_pinned_version(node, kube_install):
    assert node.out("kubeadm version -o short") == KUBE_VERSION


def test_kubelet_is_the_pinned_version(node, kube_install):
    assert node.out("kubelet --version") == f"Kubernetes {KUBE_VERSION}"


def test_the_kube_packages_are_held(node, kube_install):
    assert node.out("apt-mark showhold").split() == ["kubeadm", "kubectl", "kubelet"]


def test_kubelet_pulls_in_kubernetes_cni(node, kube_install):
    assert node.out("dpkg-query -W -f='${Version}' kubernetes-cni") == CNI_DEB_VERSION
    assert node.out("test -x /opt/cni/bin/bridge && echo ok") == "ok", "no bridge plugin in /opt/cni/bin"


def test_the_kubeadm_drop_in_reads_etc_default_kubelet(node, kube_install):
    drop_in = node.out("cat /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf")
    assert "EnvironmentFile=-/etc/default/kubelet" in drop_in, drop_in


def test_containerd_io_installs_with_plain_apt(containerd_install):
    assert containerd_install.returncode == 0, f"apt failed:\n{containerd_install.stdout}\n{containerd_install.stderr}"


def test_containerd_is_the_pinned_version(node, containerd_install):
    assert node.out("containerd --version").startswith(f"containerd containerd.io {CONTAINERD_VERSION}")


def test_runc_runs(node, containerd_install):
    assert node.out("runc --version").splitlines()[0] == f"runc version {RUNC_VERSION.removeprefix('v')}"


def test_the_packages_stage_pins_the_mirrors_containerd_io(node, containerd_install):
    """The stage's own version match (containerd.version 2.2) picks the mirror's Docker-style version."""
    (node.root / "tmp" / "packages.sh").write_text(render("packages", "k8smaster", {}))
    wanted = node.out("KVMK_SOURCE_ONLY=1; source /tmp/packages.sh; newest_matching containerd.io 2.2")
    assert wanted == CONTAINERD_DEB_VERSION


def test_apt_keeps_the_mirrors_verified_indexes(node, kube_install, containerd_install):
    lists = node.out("ls /var/lib/apt/lists").split()
    for repo in (KUBE_REPO, f"{DOCKER_REPO}/dists/bookworm/"):
        index = f"{repo.removeprefix('http://').replace('/', '_')}InRelease"
        assert index in lists, f"no verified {index} in /var/lib/apt/lists: {lists}"


def test_apt_refuses_the_mirror_under_another_key(node, kube_install):
    """Signed by the mirror's key, the index is refused when apt trusts only another key (Debian's)."""
    result = node.sh(f"""
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {KUBE_REPO} /" >/tmp/other.list
        mkdir -p /tmp/other-lists/partial
        apt-get update -o Dir::Etc::SourceList=/tmp/other.list -o Dir::Etc::SourceParts=/nonexistent \\
          -o Dir::State::Lists=/tmp/other-lists
    """)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "NO_PUBKEY" in output, f"apt accepted an index it cannot verify:\n{output}"


def test_nothing_switches_signature_checks_off(node, kube_install, containerd_install):
    found = node.sh("grep -rniE 'trusted=yes|allow-insecure|allowunauthenticated' /etc/apt")
    assert found.returncode == 1, f"apt configuration bypasses signature checks:\n{found.stdout}"
    assert "--allow-unauthenticated" not in render("packages", "k8smaster", {})
