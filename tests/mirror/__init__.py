"""Helpers of the mirror tests: a directory served in a network namespace whose
only link is lo, and a Debian root run by chroot inside that namespace, so the
served mirror is the one thing the root can reach.

    with served_root(www, debian_root_tar(tar, "--variant=minbase"), "kvmk-x", 8080, workdir) as node:
        node.out("apt-get update")

    with netns("kvmk-x", "192.0.2.10/32") as name, kit_served(directory, name, "192.0.2.10") as config:
        ...  # serve.sh's HTTP and TLS registry on 192.0.2.10, reachable in namespace `name` only

Needs root (ip netns, chroot, mmdebstrap in root mode).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
SERVE = PROJECT_DIR / "tools" / "mirror-kit" / "serve.sh"
# The kit's pinned versions (tools/versions.env), by key.
PINS = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", (PROJECT_DIR / "tools" / "versions.env").read_text(), re.M))
# The Kubernetes versions the kit serves: MIRROR_KUBE_VERSION (the program's default), then
# the older patch releases of MIRROR_KUBE_UPGRADE_FROM, which an upgrade test starts from.
KUBE_VERSIONS = [PINS["MIRROR_KUBE_VERSION"], *PINS["MIRROR_KUBE_UPGRADE_FROM"].split()]


def run_kit_script(script: Path, timeout: float) -> None:
    """Run a tools/mirror-kit build script (a no-op when its stamps match); it must succeed."""
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{script.name} failed ({result.returncode}):\n{result.stderr[-5000:]}"


def stdout_of(argv: list, timeout: float = 300, **kwargs) -> str:
    """The stdout of `argv`, which must succeed (its output goes into the failure message)."""
    result = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout, check=False,
                            **kwargs)
    assert result.returncode == 0, f"{shlex.join(result.args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def debian_root_tar(path: Path, *mmdebstrap_args: str) -> Path:
    """A Debian 12 root in the tar `path`, made once with `mmdebstrap ARGS bookworm` from Debian's archive."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        subprocess.run(
            ["mmdebstrap", "--quiet", "--format=tar", *mmdebstrap_args, "bookworm", str(partial)],
            check=True, timeout=1200,
        )
        partial.rename(path)
    return path


@dataclass
class Node:
    """A Debian root run by chroot inside a network namespace."""

    root: Path
    netns: str

    def sh(self, script: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run bash `script` (with -euo pipefail) as root in the root, with a clean environment."""
        chrooted = shlex.join([
            "chroot", str(self.root), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
            "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "bash", "-euo", "pipefail", "-c", script,
        ])
        # /proc in a private mount namespace: it goes away with the command.
        inner = f"mount -t proc proc {shlex.quote(str(self.root / 'proc'))} && exec {chrooted}"
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def out(self, script: str) -> str:
        """The stripped stdout of `script`, which must succeed."""
        result = self.sh(script)
        assert result.returncode == 0, f"{script!r} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_serving(netns: str, url: str, server: subprocess.Popen, seconds: float = 20) -> None:
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=1)"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"http.server exited with {server.returncode}"
        if subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    raise AssertionError(f"nothing answers on {url} in namespace {netns}")


@contextlib.contextmanager
def netns(prefix: str, *addresses: str) -> Iterator[str]:
    """A fresh network namespace `prefix`-<pid> whose only link is lo, up and holding `addresses`
    (e.g. "192.0.2.10/32"): no route leads out of it. On exit every process left in it is killed
    and the namespace is deleted, also after a failure."""
    name = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for address in addresses:
            subprocess.run(["ip", "-n", name, "addr", "add", address, "dev", "lo"], check=True)
        yield name
    finally:
        left = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", name], check=False)


@contextlib.contextmanager
def served_root(directory: Path, root_tar: Path, name: str, port: int, workdir: Path) -> Iterator[Node]:
    """`directory` served by http.server on 127.0.0.1:`port` in a fresh namespace
    `name`-<pid> (lo only), and `root_tar` unpacked into `workdir` and run in it.
    On exit the server, every process left in the namespace, the namespace and
    `workdir` are removed, also after a failure."""
    server: Optional[subprocess.Popen] = None
    try:
        with netns(name) as namespace:
            try:
                subprocess.run(["tar", "-C", str(workdir), "-xf", str(root_tar)], check=True, timeout=600)
                with open(workdir.parent / f"{name}-http.log", "wb") as log:
                    server = subprocess.Popen(
                        ["ip", "netns", "exec", namespace, sys.executable, "-m", "http.server",
                         "--bind", "127.0.0.1", "--directory", str(directory), str(port)],
                        stdout=log, stderr=subprocess.STDOUT,
                    )
                wait_until_serving(namespace, f"http://127.0.0.1:{port}/", server)
                yield Node(workdir, namespace)
            finally:
                if server is not None:
                    stop(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def share_mirror(mirror: Path, directory: Path) -> Path:
    """`directory` holding links to `mirror`'s registry storage, www and tools: serve.sh run on it
    makes a CA, certificates and PID files of its own and leaves `mirror`'s untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    for shared in ("registry", "www", "bin"):
        (directory / shared).symlink_to(mirror / shared)
    return directory


@contextlib.contextmanager
def kit_served(directory: Path, namespace: str, address: str, http_port: int = 8080,
               registry_port: int = 5000) -> Iterator[dict]:
    """tools/mirror-kit/serve.sh ADDRESS --out `directory` inside `namespace`; yields the stack config
    it prints. On exit serve.sh --stop stops both daemons by their PIDs, also after a failure."""
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, str(SERVE), address, "--http-port", str(http_port),
             "--registry-port", str(registry_port), "--out", str(directory)],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert result.returncode == 0, f"serve.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        yield yaml.safe_load(result.stdout)
    finally:
        subprocess.run([str(SERVE), "--stop", "--out", str(directory)], capture_output=True, timeout=60, check=False)


def registry_tags(directory: Path) -> dict[str, str]:
    """Every `repository:tag` in the registry storage of the mirror directory, with its manifest digest."""
    repositories = directory / "registry" / "docker" / "registry" / "v2" / "repositories"
    return {
        f"{link.parents[4].relative_to(repositories)}:{link.parents[1].name}": link.read_text().strip()
        for link in repositories.glob("**/_manifests/tags/*/current/link")
    }
