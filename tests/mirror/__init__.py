"""Helpers of the mirror tests: a directory served in a network namespace whose
only link is lo, and a Debian root run by chroot inside that namespace, so the
served mirror is the one thing the root can reach.

    with served_root(www, debian_root_tar(tar, "--variant=minbase"), "kvmk-x", 8080, workdir) as node:
        node.out("apt-get update")

Needs root (ip netns, chroot, mmdebstrap in root mode).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional


def run_kit_script(script: Path, timeout: float) -> None:
    """Run a tools/mirror-kit build script (a no-op when its stamps match); it must succeed."""
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{script.name} failed ({result.returncode}):\n{result.stderr[-5000:]}"


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
def served_root(directory: Path, root_tar: Path, name: str, port: int, workdir: Path) -> Iterator[Node]:
    """`directory` served by http.server on 127.0.0.1:`port` in a fresh namespace
    `name`-<pid> (lo only), and `root_tar` unpacked into `workdir` and run in it.
    On exit the server, every process left in the namespace, the namespace and
    `workdir` are removed, also after a failure."""
    netns = f"{name}-{os.getpid()}"
    server: Optional[subprocess.Popen] = None
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["tar", "-C", str(workdir), "-xf", str(root_tar)], check=True, timeout=600)
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with open(workdir.parent / f"{name}-http.log", "wb") as log:
            server = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server",
                 "--bind", "127.0.0.1", "--directory", str(directory), str(port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until_serving(netns, f"http://127.0.0.1:{port}/", server)
        yield Node(workdir, netns)
    finally:
        if server is not None:
            stop(server)
        left = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
