"""scripts/etcd-snapshot.sh against a real etcd (the kit's build of the version kubeadm runs) serving
TLS with the PKI the real kubeadm makes, in a private /etc and /var/lib (overlays in a user, mount and
network namespace: nothing leaves loopback), with a stand-in `kubectl exec` that runs the kit's etcdctl
and etcdutl where the etcd pod would: its archive passes providers/etcd_snapshot.py's check, and the
snapshot in it restores, with etcdutl, to a data directory that holds a key deleted after it."""

from __future__ import annotations

import shlex
import subprocess
import tarfile
import textwrap

import pytest

from components import procedure
from components.config import parse
from providers.etcd_snapshot import checked_archive
from tests.conftest import with_keys
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import require
from tests.tools.private_node import run_on_private_node

pytestmark = pytest.mark.tools

ETCD_BIN = PROJECT_DIR / ".cache" / "mirror" / "build" / "images" / "bin" / "etcd-v3.6.8"
# `kubectl -n kube-system exec etcd-k8smaster -- CMD…`: CMD here, as in the pod.
FAKE_KUBECTL = textwrap.dedent("""\
    #!/bin/bash
    [[ "$1 $2 $3 $4 $5" == "-n kube-system exec etcd-k8smaster --" ]] || { echo "unexpected: $*" >&2; exit 2; }
    shift 5
    exec "$@"
""")
PKI = "/etc/kubernetes/pki/etcd"
ETCD = (f"etcd --name k8smaster --data-dir /var/lib/etcd --listen-client-urls https://127.0.0.1:2379 "
        f"--advertise-client-urls https://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 "
        f"--initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster k8smaster=http://127.0.0.1:2380 "
        f"--cert-file {PKI}/server.crt --key-file {PKI}/server.key --client-cert-auth --trusted-ca-file {PKI}/ca.crt")
CLIENT = (f"etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/ca.crt --cert={PKI}/healthcheck-client.crt "
          f"--key={PKI}/healthcheck-client.key")


def test_the_snapshot_archive_holds_a_checked_snapshot_that_restores_and_the_pki(tmp_path, ssh_keys):
    require(None if (ETCD_BIN / "etcdutl").exists() else f"missing {ETCD_BIN}/etcdutl: run tools/mirror-kit/build.sh")
    settings = parse(with_keys(load_stack_config("dev"), ssh_keys), "dev", PROJECT_DIR)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    script = tmp_path / "etcd-snapshot.sh"
    # The command's script, unwrapped from `sudo -n bash -c '…'`.
    script.write_text(shlex.split(procedure.etcd_snapshot_command(settings))[4])
    result = run_on_private_node(tmp_path, [
        f"{{ {ETCD} >{tmp_path}/etcd.log 2>&1 & }}",
        f"for _ in $(seq 50); do {CLIENT} endpoint health >/dev/null 2>&1 && break; sleep 0.2; done",
        f"{CLIENT} put /registry/configmaps/default/kept-by-the-snapshot hello >/dev/null",
        f"bash {script} >{tmp_path}/snapshot.tar",
        f"{CLIENT} del /registry/configmaps/default/kept-by-the-snapshot >/dev/null",
        f"{{ ls -A /var/lib/kvm-kubeadm /var/lib/etcd >{tmp_path}/left 2>&1 || true; }}",
        "kill %1",
    ], [bin_dir, ETCD_BIN], private=("/etc", "/var/lib"), kubeconfigs="admin")
    assert result.returncode == 0, result.stderr + (tmp_path / "etcd.log").read_text()[-2000:]
    status = checked_archive(tmp_path / "snapshot.tar")
    assert status["totalKey"] >= 1 and status["revision"] >= 2, status
    assert "snapshot taken" in result.stderr
    # Nothing of the snapshot is left on the node: only etcd's own member directory.
    assert "kvm-kubeadm-snapshot" not in (tmp_path / "left").read_text()
    with tarfile.open(tmp_path / "snapshot.tar") as archive:
        db = archive.extractfile("./etcd.db").read()
        names = set(archive.getnames())
    assert {"./pki/ca.key", "./pki/sa.key", "./pki/etcd/ca.key"} <= names
    (tmp_path / "restore.db").write_bytes(db)
    restored = tmp_path / "restored"
    subprocess.run([str(ETCD_BIN / "etcdutl"), "snapshot", "restore", str(tmp_path / "restore.db"),
                    "--data-dir", str(restored)], check=True, capture_output=True)
    dump = subprocess.run([str(ETCD_BIN / "etcdutl"), "snapshot", "status", str(tmp_path / "restore.db"), "-w", "json"],
                          check=True, capture_output=True, text=True).stdout
    assert '"totalKey"' in dump and (restored / "member").is_dir()
    # etcd keeps each key's name in its value record: the key deleted after the snapshot is in it.
    assert b"/registry/configmaps/default/kept-by-the-snapshot" in (restored / "member" / "snap" / "db").read_bytes()
