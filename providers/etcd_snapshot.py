"""Dynamic provider for etcd snapshots kept on the KVM host: each create or update runs
scripts/etcd-snapshot.sh on the leader over `ssh`, receives its tar archive (the snapshot, its
sha256, etcdutl's status and the PKI a restore needs) straight into a file of its own, mode 0600,
in a directory of mode 0700, checks it, and keeps the stack's newest `keep` archives.

The archive holds the cluster's CA keys: it never passes through Pulumi, whose state records only
its path, the time it was taken and etcd's revision and key count. `diff` plans a snapshot on every
`up` when `every_up` is set, and whenever `trigger` changes. Deleting the resource (`pulumi
destroy`) leaves the snapshots where they are: they are what a lost cluster is restored from.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pulumi
from pulumi.dynamic import DiffResult

from providers.acting import ActingProvider
from providers.ssh import run_over_ssh

SUFFIX = ".etcd-snapshot.tar"
# Saving and checking a snapshot of a small cluster takes seconds; under emulation, minutes.
SNAPSHOT_TIMEOUT_SECONDS = 900
# What a restore needs besides the snapshot (kubeadm's "Backing up the certificates").
PKI_FILES = ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
             "etcd/ca.crt", "etcd/ca.key")


def checked_archive(path: Path) -> dict[str, Any]:
    """etcdutl's status from the archive at `path`, once its snapshot matches its sha256 and every PKI file is there."""
    with tarfile.open(path) as archive:
        members = {member.name.removeprefix("./"): member for member in archive.getmembers() if member.isfile()}
        missing = sorted({"etcd.db", "etcd.db.sha256", "status.json", *(f"pki/{f}" for f in PKI_FILES)} - set(members))
        if missing:
            raise RuntimeError(f"the snapshot archive lacks {', '.join(missing)}")

        def read(name: str) -> bytes:
            return archive.extractfile(members[name]).read()

        digest = hashlib.sha256(read("etcd.db")).hexdigest()
        if read("etcd.db.sha256").decode().split()[0] != digest:
            raise RuntimeError("the snapshot's sha256 does not match the one taken on the node: a damaged copy")
        return json.loads(read("status.json"))


def kept(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` archives (their names sort by time); the ones kept, oldest first."""
    archives = sorted(directory.glob(f"*{SUFFIX}"))
    for old in archives[:-keep]:
        old.unlink()
    return archives[-keep:]


def take(props: dict[str, Any]) -> dict[str, Any]:
    directory = Path(props["directory"])
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    taken = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{taken}{SUFFIX}"
    partial = path.with_name(path.name + ".part")
    try:
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as output:
            result = run_over_ssh(props, props["ip"], props["command"], SNAPSHOT_TIMEOUT_SECONDS, output=output)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-20:])
            raise RuntimeError(f"the etcd snapshot on {props['node']} failed ({result.returncode}):\n{tail}")
        status = checked_archive(partial)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    return {**props, "path": str(path), "taken": taken, "revision": status["revision"],
            "total_keys": status["totalKey"], "kept": [str(p) for p in kept(directory, int(props["keep"]))]}


class EtcdSnapshotProvider(ActingProvider):
    resource_id = "etcd-snapshot"

    def act(self, props: dict[str, Any]) -> dict[str, Any]:
        return take(props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        inputs = ("command", "ip", "directory", "keep", "trigger", "every_up")
        changed = bool(news.get("every_up")) or any(olds.get(key) != news.get(key) for key in inputs)
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)


class EtcdSnapshot(pulumi.dynamic.Resource):
    """The newest etcd snapshot of the cluster, kept on the KVM host with the ones before it."""

    path: pulumi.Output[str]
    """The archive on the KVM host."""
    taken: pulumi.Output[str]
    """When, `YYYYMMDDTHHMMSSZ` (UTC)."""
    revision: pulumi.Output[int]
    """etcd's revision in it."""

    def __init__(self, name: str, inputs: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            EtcdSnapshotProvider(), name,
            {**inputs, "path": None, "taken": None, "revision": None, "total_keys": None, "kept": None}, opts,
        )
