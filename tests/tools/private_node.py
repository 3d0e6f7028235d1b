"""A control plane's files without a control plane: the PKI and kubeconfigs the real kubeadm makes, in a
private /etc (and /var/lib, when asked) of a user, mount and network namespace (`unshare -rmn`), whose
loopback also holds the node's address (kubeadm refuses a loopback one), so nothing leaves it."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from components import kubeadm
from tests.tools.test_real_tools import BIN, need

NODE_IP = "192.0.2.10"


def run_on_private_node(tmp_path: Path, steps: list[str], path: list[Path], api_port: int = kubeadm.API_SERVER_PORT,
                        private: tuple[str, ...] = ("/etc",), kubeconfigs: str = "all") -> subprocess.CompletedProcess:
    """`steps` (shell lines, joined by &&) on a node whose PKI and kubeconfigs (`kubeadm init phase kubeconfig
    <kubeconfigs>`) kubeadm has just made; `path` comes first on PATH, then the toolchain's kubeadm."""
    need("kubeadm")
    (tmp_path / "init.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: {kubeadm.KUBEADM_API}
        kind: InitConfiguration
        localAPIEndpoint: {{advertiseAddress: {NODE_IP}, bindPort: {api_port}}}
        nodeRegistration: {{name: k8smaster}}
        ---
        apiVersion: {kubeadm.KUBEADM_API}
        kind: ClusterConfiguration
        kubernetesVersion: v1.36.3
    """))
    mounts = []
    for lower in private:
        upper, work = (tmp_path / f"{kind}{lower.replace('/', '-')}" for kind in ("upper", "work"))
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        mounts.append(f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {lower}")
    inner = " && ".join([
        *mounts, "ip link set lo up", f"ip addr add {NODE_IP}/24 dev lo",
        f"kubeadm init phase certs all --config {tmp_path}/init.yaml >/dev/null",
        f"kubeadm init phase kubeconfig {kubeconfigs} --config {tmp_path}/init.yaml >/dev/null",
        *steps,
    ])
    search = ":".join([*map(str, path), str(BIN), "/usr/sbin:/usr/bin:/sbin:/bin"])
    return subprocess.run(["unshare", "-rmn", "bash", "-c", f"set -euo pipefail; {inner}"], env={"PATH": search},
                          capture_output=True, text=True, check=False, timeout=300)
