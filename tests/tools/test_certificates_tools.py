"""scripts/certificates.sh against the real kubeadm built here, on a control plane's PKI that kubeadm
makes in a private /etc (an overlay in a user, mount and network namespace: nothing leaves loopback):
its report is what providers/certificate_expiry.py reads, and its renewal renews every certificate,
restarts the static pods (a stand-in `ctr`, whose kill of the API server's container starts a TLS
server on the renewed certificate, as the kubelet would) and waits until the new one is served."""

from __future__ import annotations

import shlex
import subprocess
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components import kubeadm, procedure
from components.scripts import render
from providers.certificate_expiry import earliest_expiry
from tests.tools.test_real_tools import BIN, need

pytestmark = pytest.mark.tools

API_PORT = 16443
# kubeadm refuses a loopback advertise address: another one on the loopback of the test's own network namespace.
NODE_IP = "192.0.2.10"
INIT = textwrap.dedent(f"""\
    apiVersion: {kubeadm.KUBEADM_API}
    kind: InitConfiguration
    localAPIEndpoint: {{advertiseAddress: {NODE_IP}, bindPort: {API_PORT}}}
    nodeRegistration: {{name: k8smaster}}
    ---
    apiVersion: {kubeadm.KUBEADM_API}
    kind: ClusterConfiguration
    kubernetesVersion: v1.36.3
""")
# `containers list … ==kube-apiserver` names the API server's container; killing it serves the
# certificate file anew. Every call is logged.
FAKE_CTR = textwrap.dedent("""\
    #!/bin/bash
    echo "ctr $*" >>"$WORK/calls"
    case "$*" in
      *'containers list'*'==kube-apiserver'*) echo apiserver-1 ;;
      *'tasks kill'*apiserver-1*) kill "$(cat "$WORK/server.pid")"; "$WORK/serve" ;;
    esac
""")
SERVE = textwrap.dedent(f"""\
    #!/bin/bash
    openssl s_server -quiet -accept 127.0.0.1:{API_PORT} -cert /etc/kubernetes/pki/apiserver.crt \\
      -key /etc/kubernetes/pki/apiserver.key </dev/null >/dev/null 2>&1 &
    echo $! >"$WORK/server.pid"
""")


def run_in_private_etc(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    for directory in ("upper", "work", "bin"):
        (tmp_path / directory).mkdir(exist_ok=True)
    for name, text in (("ctr", FAKE_CTR), ("serve", SERVE)):
        path = tmp_path / ("bin" if name == "ctr" else "") / name
        path.write_text(text)
        path.chmod(0o755)
    (tmp_path / "init.yaml").write_text(INIT)
    inner = " && ".join([
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path}/upper,workdir={tmp_path}/work /etc",
        "ip link set lo up", f"ip addr add {NODE_IP}/24 dev lo",
        f"{BIN}/kubeadm init phase certs all --config {tmp_path}/init.yaml >/dev/null",
        f"{BIN}/kubeadm init phase kubeconfig all --config {tmp_path}/init.yaml >/dev/null",
        f"{tmp_path}/serve", "sleep 1.1", script,
    ])
    return subprocess.run(
        ["unshare", "-rmn", "bash", "-c", f"set -euo pipefail; {inner}; kill \"$(cat {tmp_path}/server.pid)\""],
        env={"PATH": f"{tmp_path}/bin:{BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "WORK": str(tmp_path)},
        capture_output=True, text=True, check=False, timeout=300,
    )


def certificates_script(tmp_path: Path, settings, renew: bool) -> str:
    params = {**procedure.certificates_params(settings, renew), "API_SERVER_PORT": API_PORT, "TIMEOUT_SECONDS": 60}
    path = tmp_path / f"certificates-{int(renew)}.sh"
    path.write_text(render(procedure.CERTIFICATES, "k8smaster", params))
    return f"bash {shlex.quote(str(path))}"


@pytest.fixture
def dev_settings(ssh_keys):
    from components.config import parse
    from tests.conftest import with_keys
    from tests.program import PROJECT_DIR, load_stack_config

    need("kubeadm")
    return parse(with_keys(load_stack_config("dev"), ssh_keys), "dev", PROJECT_DIR)


def test_the_check_reports_a_year_of_kubeadm_certificates(tmp_path, dev_settings):
    result = run_in_private_etc(tmp_path, certificates_script(tmp_path, dev_settings, renew=False))
    assert result.returncode == 0, result.stderr
    expiry = earliest_expiry(result.stdout)
    now = datetime.now(timezone.utc)
    assert now + timedelta(days=364) < expiry <= now + timedelta(days=366), expiry
    assert not (tmp_path / "calls").exists(), "a check restarts nothing"


def test_the_renewal_renews_restarts_the_static_pods_and_waits_for_the_new_serving_certificate(tmp_path, dev_settings):
    before = tmp_path / "before.json"
    check = certificates_script(tmp_path, dev_settings, renew=False)
    renew = certificates_script(tmp_path, dev_settings, renew=True)
    result = run_in_private_etc(tmp_path, f"{check} >{before} && sleep 1.1 && {renew}")
    assert result.returncode == 0, result.stderr
    assert earliest_expiry(result.stdout) > earliest_expiry(before.read_text())
    calls = (tmp_path / "calls").read_text().splitlines()
    listed = [call for call in calls if "containers list" in call]
    assert [call.split("==")[1] for call in listed] == list(kubeadm.STATIC_POD_HAS_READINESS_PROBE)
    assert any("tasks kill --signal SIGTERM apiserver-1" in call for call in calls), calls
    assert "certificates renewed" in result.stderr
