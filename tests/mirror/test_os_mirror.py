"""The partial Debian mirror (mirrors.osApt), used by a fresh Debian 12 root with nothing else reachable.

tools/mirror-kit/build-os-mirror.sh builds (or, by its stamp, keeps) Debian's
own signed index files and the .debs a node installs in .cache/mirror/www.
This module serves that directory on 127.0.0.1 inside a network namespace it
creates, whose only link is lo, and chroots into it a Debian 12 minbase root
(mmdebstrap, cached in .cache/mirror-test/) whose apt sources are the guest
image's three lines. The packages stage's own set_os_mirror points them at the
mirror; apt then verifies Debian's signatures with the root's stock
debian-archive-keyring and installs what the stages need from the mirror alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from components.scripts import render
from tests.mirror import Node, debian_root_tar, served_root
from tests.mirror.test_apt_repos import CONTAINERD_VERSION, DOCKER_REPO, KUBE_REPO, KUBE_VERSION, MIRROR_URL, PORT
from tests.pulumi_cli import require

pytestmark = pytest.mark.mirror

PROJECT_DIR = Path(__file__).resolve().parents[2]
BUILD_OS_MIRROR = PROJECT_DIR / "tools" / "mirror-kit" / "build-os-mirror.sh"
PACKAGE_LIST = PROJECT_DIR / "tools" / "mirror-kit" / "os-mirror" / "packages.list"
WWW = PROJECT_DIR / ".cache" / "mirror" / "www"

# tools/build-guest-image.sh's sources, as mmdebstrap writes them into the image.
GUEST_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
ROOT_TAR = PROJECT_DIR / ".cache" / "mirror-test" / "debian-12-minbase-plain.tar"  # nothing but minbase
NETNS = "kvmk-osmirror"
PACKAGES = [
    line.split("#")[0].strip() for line in PACKAGE_LIST.read_text().splitlines() if line.split("#")[0].strip()
]
# apt's words for a source it cannot verify or a package it cannot authenticate.
INSECURE = re.compile(r"not signed|insecure|NO_PUBKEY|unauthenticated|cannot be authenticated|trusted=yes", re.I)
REQUEST = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3})')


def missing_prerequisite() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (ip netns, chroot, mmdebstrap root mode)"
    missing = [tool for tool in ("ip", "unshare", "chroot", "mmdebstrap", "apt-get", "gpgv") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}: run tools/install-e2e-deps.sh" if missing else None


@dataclass
class Served:
    node: Node
    http_log: Path

    def stage(self, call: str, **params: str) -> subprocess.CompletedProcess:
        """Source the rendered packages stage in the root and run CALL (its functions)."""
        script = render("packages", "k8smaster", {"OS_APT_MIRROR": MIRROR_URL, **params})
        (self.node.root / "tmp" / "packages.sh").write_text(script)
        return self.node.sh(f"KVMK_SOURCE_ONLY=1; source /tmp/packages.sh; {call}")

    def requests(self) -> list[tuple[str, int]]:
        return [(path, int(code)) for path, code in REQUEST.findall(self.http_log.read_text())]


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def os_mirror() -> Path:
    require(missing_prerequisite())
    result = subprocess.run([str(BUILD_OS_MIRROR)], capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, f"build-os-mirror.sh failed ({result.returncode}):\n{result.stderr[-5000:]}"
    return WWW


@pytest.fixture(scope="module")
def served(os_mirror: Path, tmp_path_factory) -> Iterator[Served]:
    """The mirror on 127.0.0.1 in a fresh namespace and a minbase root with the guest's sources in it."""
    root_tar = debian_root_tar(ROOT_TAR, "--variant=minbase")
    workdir = tmp_path_factory.mktemp("debian-root")
    with served_root(os_mirror, root_tar, NETNS, PORT, workdir) as node:
        (node.root / "etc" / "apt" / "sources.list").write_text("\n".join(GUEST_SOURCES) + "\n")
        for lists in (node.root / "var" / "lib" / "apt" / "lists").glob("*_*"):
            lists.unlink()  # as in the guest image: no index until the stage's apt-get update
        policy = node.root / "usr" / "sbin" / "policy-rc.d"  # no daemon starts inside the root
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        yield Served(node, workdir.parent / f"{NETNS}-http.log")


@pytest.fixture(scope="module")
def updated(served: Served) -> subprocess.CompletedProcess:
    """The packages stage's set_os_mirror: sources rewritten, then apt-get update."""
    return served.stage("set_os_mirror")


@pytest.fixture(scope="module")
def base_install(served: Served, updated) -> subprocess.CompletedProcess:
    """The packages stage's first install (main: ca-certificates curl gpg)."""
    return served.stage("ensure_apt_lists; install_missing ca-certificates curl gpg")


@pytest.fixture(scope="module")
def os_deps_install(served: Served, base_install) -> subprocess.CompletedProcess:
    """What the kube packages and containerd.io need from the OS (os-mirror/packages.list)."""
    return served.stage(f"apt_get install {' '.join(p for p in PACKAGES if p != 'containerd')}")


@pytest.fixture(scope="module")
def distro_containerd(served: Served, os_deps_install) -> subprocess.CompletedProcess:
    """containerd.source = distro: the stage installs and holds the archive's containerd."""
    return served.stage("install_containerd_package", CONTAINERD_SOURCE="distro", CONTAINERD_VERSION="")


def test_the_namespace_has_no_address_but_loopback(served):
    addresses = subprocess.run(["ip", "-n", served.node.netns, "-o", "addr"], capture_output=True, text=True,
                               check=True).stdout
    assert re.findall(r"inet6? (\S+)", addresses) == ["127.0.0.1/8", "::1/128"], addresses


def test_set_os_mirror_keeps_each_path_and_swaps_the_host(served, updated):
    assert updated.returncode == 0, output(updated)
    sources = (served.node.root / "etc" / "apt" / "sources.list").read_text().split("\n")
    wanted = [line.replace("http://deb.debian.org", MIRROR_URL) for line in GUEST_SOURCES]
    assert [line for line in sources if line.strip()] == wanted


def test_apt_update_fetches_every_suite_signed(updated):
    assert updated.returncode == 0, output(updated)
    text = updated.stdout + updated.stderr
    for suite, path in (("bookworm", "debian"), ("bookworm-updates", "debian"), ("bookworm-security", "debian-security")):
        assert f"{MIRROR_URL}/{path} {suite} InRelease" in text, text
    assert not re.search(r"^(W|E|Err|Ign):", text, re.M), f"apt-get update was not clean:\n{text}"
    assert not INSECURE.search(text), text


def test_apt_asks_for_the_indexes_by_hash_as_xz_and_finds_everything(served, updated):
    assert updated.returncode == 0, output(updated)
    requests = served.requests()
    assert all(code == 200 for _, code in requests), f"not every request was served: {requests}"
    dists = [path for path, _ in requests if "/dists/" in path]
    assert all(re.search(r"/InRelease$|/by-hash/SHA256/[0-9a-f]{64}$", path) for path in dists), dists
    packages = sorted(os.path.realpath(WWW / path.lstrip("/")) for path in dists if "/binary-amd64/by-hash/" in path)
    assert len(packages) == 3 and all(path.endswith("/Packages.xz") for path in packages), packages


def test_apt_refuses_the_mirror_without_debians_key(served, updated):
    """apt checks the signatures: with no trusted key the same mirror is refused."""
    result = served.node.sh("""
        mkdir -p /tmp/no-keys /tmp/no-key-lists/partial
        apt-get update -o Dir::Etc::Trusted=/tmp/no-keys/none.gpg -o Dir::Etc::TrustedParts=/tmp/no-keys \\
          -o Dir::State::Lists=/tmp/no-key-lists
    """)
    text = result.stdout + result.stderr
    assert "NO_PUBKEY" in text and "is not signed" in text, f"apt accepted an index it cannot verify:\n{text}"


def test_the_stage_installs_ca_certificates_curl_and_gpg(served, base_install):
    assert base_install.returncode == 0, output(base_install)
    assert not INSECURE.search(base_install.stdout + base_install.stderr), output(base_install)
    assert served.node.out("curl --version").startswith("curl 7.88.1")
    assert served.node.out("gpg --version").startswith("gpg (GnuPG) 2.2")


def test_the_kube_and_containerd_os_dependencies_install(served, os_deps_install):
    assert os_deps_install.returncode == 0, output(os_deps_install)
    assert not INSECURE.search(os_deps_install.stdout + os_deps_install.stderr), output(os_deps_install)
    wanted = [p for p in PACKAGES if p != "containerd"]
    status = served.node.out(f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {' '.join(wanted)}")
    assert sorted(line.split()[0] for line in status.splitlines() if line.split()[1] == "ii") == sorted(wanted)
    for tool in ("iptables", "ip", "nsenter", "mount", "conntrack", "ebtables", "ethtool", "socat", "modprobe"):
        assert served.node.out(f"command -v {tool}"), f"{tool} not on PATH"


def test_the_stage_installs_the_archives_containerd(served, distro_containerd):
    assert distro_containerd.returncode == 0, output(distro_containerd)
    assert served.node.out("containerd --version").startswith("containerd github.com/containerd/containerd 1.6.")
    assert "containerd" in served.node.out("apt-mark showhold").split()


@pytest.fixture(scope="module")
def kit_installs(served: Served, distro_containerd) -> subprocess.CompletedProcess:
    """The stage's kube packages and containerd.io (source docker, after distro above) from the
    kit's repositories (build-debs.sh) and this mirror."""
    repos = [WWW / KUBE_REPO.removeprefix(MIRROR_URL + "/") / "InRelease",
             WWW / DOCKER_REPO.removeprefix(MIRROR_URL + "/") / "dists" / "bookworm" / "InRelease"]
    require(next((f"{path} missing: run tools/mirror-kit/build-debs.sh" for path in repos if not path.exists()), None))
    return served.stage(
        "install_kube_packages; install_containerd_package",
        KUBE_VERSION=KUBE_VERSION.removeprefix("v"), KUBE_REPO=KUBE_REPO, CONTAINERD_SOURCE="docker",
        CONTAINERD_VERSION=CONTAINERD_VERSION.removeprefix("v"), CONTAINERD_REPO=DOCKER_REPO.removesuffix("/debian"),
    )


def test_the_kit_packages_find_their_os_dependencies_here(served, kit_installs):
    """With the kit's repositories too, the stage's own installs need nothing but the mirror."""
    assert kit_installs.returncode == 0, output(kit_installs)
    assert served.node.out("apt-mark showhold").split() == ["containerd.io", "kubeadm", "kubectl", "kubelet"]
    assert served.node.out("kubeadm version -o short") == KUBE_VERSION


def test_a_change_of_containerd_source_replaces_the_package(served, kit_installs):
    """distro -> docker (above), then back: the stage removes the other package and installs
    and holds the configured one."""
    assert kit_installs.returncode == 0, output(kit_installs)
    assert "containerd removed" in kit_installs.stdout
    assert served.node.out("containerd --version").split()[2] == CONTAINERD_VERSION
    back = served.stage("install_containerd_package", CONTAINERD_SOURCE="distro", CONTAINERD_VERSION="")
    assert back.returncode == 0, output(back)
    assert "containerd.io removed" in back.stdout
    assert served.node.out("containerd --version").startswith("containerd github.com/containerd/containerd 1.6.")
    holds = served.node.out("apt-mark showhold").split()
    assert "containerd" in holds and "containerd.io" not in holds
