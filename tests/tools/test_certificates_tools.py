"""scripts/certificates.sh against the real kubeadm built here, on a control plane's PKI that kubeadm
makes on a private node (tests/tools/private_node.py): its report is what providers/certificate_expiry.py
reads, and its renewal renews every certificate, restarts the static pods (a stand-in `ctr`, whose kill of
the API server's container starts a TLS server on the renewed certificate, as the kubelet would) and
waits until the new one is served."""

from __future__ import annotations

import shlex
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components import kubeadm, procedure
from components.scripts import render
from providers.certificate_expiry import earliest_expiry
from tests.tools.private_node import run_on_private_node

pytestmark = pytest.mark.tools

API_PORT = 16443
# `containers list … ==NAME` names NAME's container, NAME-1; killing kube-apiserver-1 serves the
# certificate file anew. Every call is logged.
FAKE_CTR = """#!/bin/bash
echo "ctr $*" >>{work}/calls
case "$*" in
  *'containers list'*) echo "${{@: -1}}" | sed 's/.*==//; s/$/-1/' ;;
  *'tasks kill'*kube-apiserver-1*) kill "$(cat {work}/server.pid)"; {work}/serve ;;
esac
"""
SERVE = f"""#!/bin/bash
openssl s_server -quiet -accept 127.0.0.1:{API_PORT} -cert /etc/kubernetes/pki/apiserver.crt \\
  -key /etc/kubernetes/pki/apiserver.key </dev/null >/dev/null 2>&1 &
echo $! >{{work}}/server.pid
"""


def run_with_an_api_server(tmp_path: Path, steps: list[str]) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for path, text in ((bin_dir / "ctr", FAKE_CTR), (tmp_path / "serve", SERVE)):
        path.write_text(text.format(work=tmp_path))
        path.chmod(0o755)
    return run_on_private_node(
        tmp_path, [f"{tmp_path}/serve", "sleep 1.1", *steps, f"kill \"$(cat {tmp_path}/server.pid)\""], [bin_dir],
        api_port=API_PORT,
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

    return parse(with_keys(load_stack_config("dev"), ssh_keys), "dev", PROJECT_DIR)


def test_the_check_reports_a_year_of_kubeadm_certificates(tmp_path, dev_settings):
    result = run_with_an_api_server(tmp_path, [certificates_script(tmp_path, dev_settings, renew=False)])
    assert result.returncode == 0, result.stderr
    expiry = earliest_expiry(result.stdout)
    now = datetime.now(timezone.utc)
    assert now + timedelta(days=364) < expiry <= now + timedelta(days=366), expiry
    assert not (tmp_path / "calls").exists(), "a check restarts nothing"


def test_the_renewal_renews_restarts_the_static_pods_and_waits_for_the_new_serving_certificate(tmp_path, dev_settings):
    before = tmp_path / "before.json"
    check = certificates_script(tmp_path, dev_settings, renew=False)
    renew = certificates_script(tmp_path, dev_settings, renew=True)
    result = run_with_an_api_server(tmp_path, [f"{check} >{before}", "sleep 1.1", renew])
    assert result.returncode == 0, result.stderr
    assert earliest_expiry(result.stdout) > earliest_expiry(before.read_text())
    calls = (tmp_path / "calls").read_text().splitlines()
    listed = [call for call in calls if "containers list" in call]
    assert [call.split("==")[1] for call in listed] == list(kubeadm.STATIC_POD_HAS_READINESS_PROBE)
    killed = [call.split()[-1] for call in calls if "tasks kill --signal SIGTERM" in call]
    assert killed == [f"{component}-1" for component in kubeadm.STATIC_POD_HAS_READINESS_PROBE], calls
    assert "certificates renewed" in result.stderr
