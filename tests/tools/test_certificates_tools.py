"""scripts/certificates.sh against the real kubeadm built here, on a control plane's PKI that kubeadm
makes on a private node (tests/tools/private_node.py): its report is what providers/certificate_expiry.py
reads, and its renewal renews every certificate, restarts the static pods (a stand-in `ctr`, whose kill of
a component's container starts a new one, as the kubelet would; the API server's new one serves /readyz)
and waits until each runs again and the API server is ready."""

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
# Each component NAME runs as container NAME-1 until its kill, then as NAME-2 (a component named in
# {work}/comes-back-never stays stopped). Killing kube-apiserver-1 starts the API server anew. Every
# call is logged.
FAKE_CTR = """#!/bin/bash
echo "ctr $*" >>{work}/calls
stopped() {{ grep -qxF "$1" {work}/killed 2>/dev/null; }}
case "$*" in
  *'containers list'*)
    name=$(echo "${{@: -1}}" | sed 's/.*==//')
    echo "$name-1"
    if stopped "$name"; then echo "$name-2"; fi ;;
  *'tasks kill'*)
    id=${{@: -1}}
    echo "${{id%-1}}" >>{work}/killed
    if [[ $id == kube-apiserver-1 ]]; then
      server=$(cat {work}/server.pid)
      kill "$server"
      # Its port free again before the new one binds it (a reaped or zombie server: at most 5 s).
      for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
      {work}/serve
    fi ;;
  *'tasks list'*)
    echo "TASK PID STATUS"
    for name in {components}; do
      if ! stopped "$name"; then echo "$name-1 1 RUNNING"
      elif ! grep -qxF "$name" {work}/comes-back-never 2>/dev/null; then echo "$name-2 2 RUNNING"; fi
    done ;;
esac
"""
# An API server on the certificate file of the moment; /readyz answers ok (`-WWW` serves files from its
# working directory).
SERVE = f"""#!/bin/bash
cd {{work}}/www
openssl s_server -quiet -WWW -accept 127.0.0.1:{API_PORT} -cert /etc/kubernetes/pki/apiserver.crt \\
  -key /etc/kubernetes/pki/apiserver.key </dev/null >/dev/null 2>&1 &
echo $! >{{work}}/server.pid
"""


def run_with_an_api_server(tmp_path: Path, steps: list[str]) -> subprocess.CompletedProcess:
    bin_dir, www = tmp_path / "bin", tmp_path / "www"
    for directory in (bin_dir, www):
        directory.mkdir(exist_ok=True)
    (www / "readyz").write_text("ok")
    for path, text in ((bin_dir / "ctr", FAKE_CTR), (tmp_path / "serve", SERVE)):
        path.write_text(text.format(work=tmp_path, components=" ".join(kubeadm.STATIC_POD_HAS_READINESS_PROBE)))
        path.chmod(0o755)
    return run_on_private_node(
        tmp_path, [f"{tmp_path}/serve", "sleep 1.1", *steps, f"kill \"$(cat {tmp_path}/server.pid)\""], [bin_dir],
        api_port=API_PORT,
    )


def certificates_script(tmp_path: Path, settings, renew: bool, timeout_seconds: int = 60) -> str:
    params = {**procedure.certificates_params(settings, renew), "API_READYZ_URL": f"https://127.0.0.1:{API_PORT}/readyz",
              "TIMEOUT_SECONDS": timeout_seconds}
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


def test_the_renewal_renews_restarts_the_static_pods_and_waits_for_them_and_a_ready_api(tmp_path, dev_settings):
    before = tmp_path / "before.json"
    check = certificates_script(tmp_path, dev_settings, renew=False)
    renew = certificates_script(tmp_path, dev_settings, renew=True)
    result = run_with_an_api_server(tmp_path, [f"{check} >{before}", "sleep 1.1", renew])
    assert result.returncode == 0, result.stderr
    assert earliest_expiry(result.stdout) > earliest_expiry(before.read_text())
    calls = (tmp_path / "calls").read_text().splitlines()
    components = list(kubeadm.STATIC_POD_HAS_READINESS_PROBE)
    listed = [call.split("==")[1] for call in calls if "containers list" in call]
    assert listed[:len(components)] == components
    killed = [call.split()[-1] for call in calls if "tasks kill --signal SIGTERM" in call]
    assert killed == [f"{component}-1" for component in components], calls
    assert "certificates renewed" in result.stderr


@pytest.mark.parametrize("setup, said", [
    # The API server serves the renewed certificate and is ready: the scheduler still runs on the old files.
    ("echo kube-scheduler >{work}/comes-back-never",
     f"not every one of {' '.join(kubeadm.STATIC_POD_HAS_READINESS_PROBE)} runs again 6s after"),
    ("rm {work}/www/readyz", "the API server is not ready 6s after the restart"),
])
def test_a_renewal_fails_until_every_component_runs_again_and_the_api_is_ready(tmp_path, dev_settings, setup, said):
    script = certificates_script(tmp_path, dev_settings, renew=True, timeout_seconds=6)
    result = run_with_an_api_server(tmp_path, [setup.format(work=tmp_path), script])
    assert result.returncode != 0
    assert said in result.stderr, result.stderr
    assert "certificates renewed" not in result.stderr
