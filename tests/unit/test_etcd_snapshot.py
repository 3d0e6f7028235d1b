"""The etcd snapshot's dynamic provider, run directly (under mocks its methods never run), against a
stand-in for `ssh` that sends the archive scripts/etcd-snapshot.sh would; and its wiring under mocks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile

import pytest

from components.config import ConfigError, parse
from providers.etcd_snapshot import PKI_FILES, SUFFIX, EtcdSnapshotProvider
from tests.fakes import put_on_path
from tests.program import DYNAMIC, PROJECT_DIR, run_program

STATUS = {"hash": 2320429947, "revision": 42, "totalKey": 7, "totalSize": 20480, "version": "3.6.0"}
SSH = """\
import os, sys
sys.stdout.buffer.write(open(os.environ["FAKE_ARCHIVE"], "rb").read())
print("etcdserver: request timed out", file=sys.stderr)
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


def archive(path, db: bytes = b"etcd data", digest: str | None = None, leave_out: str = "") -> None:
    """An archive as the script writes it: ./etcd.db, its sha256, etcdutl's status and the PKI."""
    files = {"etcd.db": db, "etcd.db.sha256": f"{digest or hashlib.sha256(db).hexdigest()}  etcd.db\n".encode(),
             "status.json": json.dumps(STATUS).encode(), **{f"pki/{name}": b"-----BEGIN-----" for name in PKI_FILES}}
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            if name != leave_out:
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def host(tmp_path, monkeypatch):
    put_on_path(monkeypatch, tmp_path / "bin", "ssh", SSH)
    monkeypatch.setenv("FAKE_ARCHIVE", str(tmp_path / "sent.tar"))
    archive(tmp_path / "sent.tar")
    return tmp_path


def props(host, keep: int = 5, **changes) -> dict:
    return {"command": "sudo -n bash -c 'etcd-snapshot'", "node": "k8smaster", "ip": "192.168.56.107",
            "directory": str(host / "snapshots" / "dev"), "keep": keep, "trigger": "", "every_up": False,
            "ssh_user": "kube", "private_key_path": "/dev/null", "ssh_options": [], **changes}


def test_a_snapshot_is_kept_on_the_host_for_root_only_and_only_its_facts_go_to_the_state(host):
    outs = EtcdSnapshotProvider().create(props(host)).outs
    path = host / "snapshots" / "dev" / f"{outs['taken']}{SUFFIX}"
    assert outs["path"] == str(path) and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert (outs["revision"], outs["total_keys"]) == (42, 7)
    assert path.read_bytes() == (host / "sent.tar").read_bytes()
    assert "BEGIN" not in json.dumps(outs), "no PKI in the state"


def test_only_the_newest_snapshots_are_kept(host):
    directory = host / "snapshots" / "dev"
    directory.mkdir(parents=True)
    for stamp in ("20261101T000000Z", "20261102T000000Z", "20261103T000000Z"):
        (directory / f"{stamp}{SUFFIX}").write_bytes(b"old")
    (directory / "notes.txt").write_text("mine")
    outs = EtcdSnapshotProvider().create(props(host, keep=2)).outs
    assert sorted(p.name for p in directory.iterdir()) == ["20261103T000000Z" + SUFFIX, f"{outs['taken']}{SUFFIX}", "notes.txt"]
    assert outs["kept"] == [str(directory / f"20261103T000000Z{SUFFIX}"), outs["path"]]


@pytest.mark.parametrize("sent, rc, message", [
    ({"digest": "0" * 64}, 0, "does not match the one taken on the node: a damaged copy"),
    ({"leave_out": "pki/etcd/ca.key"}, 0, "the snapshot archive lacks pki/etcd/ca.key"),
    ({}, 1, r"(?s)the etcd snapshot on k8smaster failed \(1\):.*request timed out"),
])
def test_a_failed_or_damaged_snapshot_fails_and_leaves_no_file(host, monkeypatch, sent, rc, message):
    archive(host / "sent.tar", **sent)
    monkeypatch.setenv("FAKE_RC", str(rc))
    with pytest.raises(RuntimeError, match=message):
        EtcdSnapshotProvider().create(props(host))
    assert list((host / "snapshots" / "dev").iterdir()) == []


@pytest.mark.parametrize("olds, news, changes", [
    ({}, {}, False),
    ({}, {"every_up": True}, True),
    ({"every_up": True}, {"every_up": True}, True),
    ({"trigger": "2026-12-07"}, {"trigger": "2026-12-07"}, False),
    ({"trigger": "2026-12-07"}, {"trigger": "2026-12-08"}, True),
    ({}, {"keep": 9}, True),
])
def test_a_snapshot_is_planned_on_every_up_when_asked_and_whenever_the_trigger_changes(host, olds, news, changes):
    diff = EtcdSnapshotProvider().diff("etcd-snapshot", props(host, **olds), props(host, **news))
    assert diff.changes is changes and diff.replaces == []


def test_without_a_switch_no_snapshot_is_registered(dev_config):
    run = run_program(dev_config)
    assert run.error is None, run.error
    assert not [r for r in run.registrations if r.name.endswith("-etcd-snapshot")]
    assert "etcdSnapshot" not in run.exports


def test_a_snapshot_is_taken_after_the_cluster_is_ready_into_the_stacks_own_directory(dev_config):
    run = run_program({**dev_config, "snapshots": {"everyUp": True, "directory": "/srv/backups", "keep": 3}})
    assert run.error is None, run.error
    (snapshot,) = [r for r in run.registrations if r.type == DYNAMIC and r.name.endswith("-etcd-snapshot")]
    assert run.by_name("k8s-ready").urn in snapshot.dependencies
    assert snapshot.inputs["directory"] == "/srv/backups/dev" and snapshot.inputs["keep"] == 3
    assert snapshot.inputs["ip"] == "192.168.56.107" and snapshot.inputs["every_up"] is True
    assert "readonly STAGE=etcd-snapshot" in snapshot.inputs["command"]
    assert "readonly -a PKI_FILES=(ca.crt ca.key sa.key sa.pub" in snapshot.inputs["command"]
    assert "etcdSnapshot" in run.exports


def test_a_snapshot_needs_a_cluster(dev_config):
    with pytest.raises(ConfigError) as error:
        parse({**dev_config, "stages": "os-prep", "snapshots": {"everyUp": True, "trigger": "now"}}, "dev", PROJECT_DIR)
    assert str(error.value).count("needs a cluster, but kvm-kubeadm:stages is 'os-prep'") == 2
    assert "kvm-kubeadm:snapshots.everyUp" in str(error.value) and "kvm-kubeadm:snapshots.trigger" in str(error.value)


def test_a_new_leader_is_restored_from_a_host_archive_before_its_init_without_the_archive_in_the_state(dev_config, tmp_path):
    from tests.program import FAKE_TOKEN, LOCAL_COMMAND, is_secret
    from tests.unit.test_pipeline import stage_of

    archive = tmp_path / "20261207T000000Z.etcd-snapshot.tar"
    archive.write_bytes(b"archive")
    run = run_program({**dev_config, "snapshots": {"restoreFrom": str(archive)}})
    assert run.error is None, run.error
    restore, init = stage_of(run, "k8smaster", "restore"), stage_of(run, "k8smaster", "init")
    assert restore.type == LOCAL_COMMAND and restore.urn in init.dependencies
    # The init config on secret stdin, then the archive, read by the host's shell into the ssh pipe.
    create = restore.inputs["create"]
    assert create.startswith("stdin=$(base64 -w0); for _ in $(seq 30); do ") and f"cat {archive}; }} | ssh " in create
    assert "readonly STAGE=restore" in restore.inputs["create"] and FAKE_TOKEN not in restore.inputs["create"]
    assert FAKE_TOKEN in restore.inputs["stdin"] and is_secret(restore.raw_inputs["stdin"])
    assert "stdin" in restore.ignore_changes and str(archive) in restore.inputs["triggers"]


def test_a_restore_from_a_missing_archive_is_refused_naming_its_key(dev_config, tmp_path):
    with pytest.raises(ConfigError) as error:
        parse({**dev_config, "snapshots": {"restoreFrom": str(tmp_path / "gone.tar")}}, "dev", PROJECT_DIR)
    assert f"kvm-kubeadm:snapshots.restoreFrom: '{tmp_path / 'gone.tar'}' is not a file" in str(error.value)


# Refuses the first two connections (ssh's own 255, as a booting VM and cloud-init's sshd restart do), then
# keeps what it was sent.
RETRIED_SSH = """\
import os, sys
count_path = os.environ["FAKE_SSH_COUNT"]
count = int(open(count_path).read()) + 1 if os.path.exists(count_path) else 1
open(count_path, "w").write(str(count))
if count <= 2:
    print("ssh: connect to host 192.168.56.107 port 22: Connection refused", file=sys.stderr)
    sys.exit(255)
open(os.environ["FAKE_SSH_RECEIVED"], "wb").write(sys.stdin.buffer.read())
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


@pytest.mark.parametrize("rc", [0, 1])
def test_the_archive_is_sent_again_while_the_new_vm_refuses_ssh_and_a_script_failure_is_not_retried(
        dev_config, tmp_path, monkeypatch, rc):
    import base64
    import subprocess

    from tests.unit.test_pipeline import stage_of

    archive = tmp_path / "snapshot.tar"
    archive.write_bytes(b"the archive")
    run = run_program({**dev_config, "snapshots": {"restoreFrom": str(archive)}})
    put_on_path(monkeypatch, tmp_path / "bin", "ssh", RETRIED_SSH)
    monkeypatch.setenv("FAKE_SSH_COUNT", str(tmp_path / "count"))
    monkeypatch.setenv("FAKE_SSH_RECEIVED", str(tmp_path / "received"))
    monkeypatch.setenv("FAKE_RC", str(rc))
    result = subprocess.run(["sh", "-c", stage_of(run, "k8smaster", "restore").inputs["create"]],
                            input=b"the init config", capture_output=True, timeout=120)
    assert result.returncode == rc and (tmp_path / "count").read_text() == "3", result.stderr
    assert (tmp_path / "received").read_bytes() == base64.b64encode(b"the init config") + b"\nthe archive"
