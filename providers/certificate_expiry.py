"""Dynamic provider for the control planes' certificates: on every `up` it asks each control plane
when its kubeadm certificates expire (`kubeadm certs check-expiration`), and renews them on those
where the earliest expiry is within the renewal window (scripts/certificates.sh: `kubeadm certs
renew all`, then the static pods restarted so that they load them).

The check runs in `diff`, which the engine calls on every preview and `up`: a cluster whose
certificates are as recorded and not due plans no change, one that is due plans an update (the
renewal), and one whose certificates changed behind the program's back (an upgrade renews them)
plans an update that records them. A version change plans one too, which runs after the upgrade
(that renews them) and records what it left. A control plane that does not answer leaves the record as it is.
Deleting the resource leaves the certificates as they are.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pulumi
from pulumi.dynamic import DiffResult

from providers.acting import ActingProvider
from providers.ssh import run_over_ssh

CHECK_TIMEOUT_SECONDS = 120
# What a renewal takes beyond its wait for the restarted static pods (`renew_wait_seconds`, the
# script's own deadline): kubeadm's renewal, the restart and the admin kubeconfig's copy. The wait
# fails with its own message before ssh gives up.
RENEWAL_BEYOND_ITS_WAIT_SECONDS = 300


def earliest_expiry(report: str) -> datetime:
    """The earliest expiry among the certificates in kubeadm's JSON report (`-o json`, after any
    log lines), leaving out those it reports missing or externally managed."""
    document = json.loads(report[report.index("{"):])
    dates = [
        datetime.fromisoformat(cert["expirationDate"].replace("Z", "+00:00"))
        for cert in document.get("certificates", [])
        if cert.get("expirationDate") and not cert.get("missing") and not cert.get("externallyManaged")
    ]
    if not dates:
        raise ValueError("kubeadm reported no certificate it manages")
    return min(dates)


def is_due(expiry: datetime, renew_before_days: float, now: datetime) -> bool:
    return expiry - now <= timedelta(days=renew_before_days)


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_script(props: dict[str, Any], node: dict[str, str], script: str, timeout: float) -> str:
    """The stdout of `node[script]` run on the node; its failure, named, with the tail of its output."""
    result = run_over_ssh(props, node["ip"], node[script], timeout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"the certificates' {script} on {node['name']} failed ({result.returncode}):\n{tail}")
    return result.stdout


def checked(props: dict[str, Any]) -> Optional[dict[str, str]]:
    """Each control plane's earliest expiry as it is now, or None when one does not answer."""
    found = {}
    for node in props["nodes"]:
        result = run_over_ssh(props, node["ip"], node["check"], CHECK_TIMEOUT_SECONDS)
        try:
            found[node["name"]] = stamp(earliest_expiry(result.stdout))
        except ValueError:
            return None
    return found


def due_nodes(expiries: dict[str, str], renew_before_days: float, now: datetime) -> list[str]:
    return [name for name, expiry in expiries.items()
            if is_due(datetime.fromisoformat(expiry.replace("Z", "+00:00")), renew_before_days, now)]


def apply(props: dict[str, Any]) -> dict[str, Any]:
    """Check each control plane and renew where due, one at a time; the outputs record the result."""
    now = datetime.now(timezone.utc)
    expiries, renewed = {}, []
    for node in props["nodes"]:
        expiry = earliest_expiry(run_script(props, node, "check", CHECK_TIMEOUT_SECONDS))
        if is_due(expiry, props["renew_before_days"], now):
            timeout = props["renew_wait_seconds"] + RENEWAL_BEYOND_ITS_WAIT_SECONDS
            expiry = earliest_expiry(run_script(props, node, "renew", timeout))
            renewed.append(node["name"])
        expiries[node["name"]] = stamp(expiry)
    return {**props, "expiries": expiries, "earliest": min(expiries.values()), "renewed": renewed}


class CertificateExpiryProvider(ActingProvider):
    resource_id = "certificate-expiry"

    def act(self, props: dict[str, Any]) -> dict[str, Any]:
        return apply(props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        inputs = ("nodes", "renew_before_days", "version")
        changed = [key for key in inputs if olds.get(key) != news.get(key)]
        if not changed:
            recorded = olds.get("expiries") or {}
            now_found = checked(news)
            if now_found is not None and now_found != recorded:
                changed = ["expiries"]
            elif due_nodes(recorded, news["renew_before_days"], datetime.now(timezone.utc)):
                changed = ["earliest"]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)


class CertificateExpiry(pulumi.dynamic.Resource):
    """The control planes' certificate expiry, checked on every `up` and renewed within the window."""

    earliest: pulumi.Output[str]
    """The earliest expiry of any control plane's certificates, `YYYY-MM-DDTHH:MM:SSZ`."""
    expiries: pulumi.Output[dict]
    """Each control plane's earliest expiry, by node name."""
    renewed: pulumi.Output[list]
    """The control planes whose certificates the last create or update renewed."""

    def __init__(self, name: str, inputs: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            CertificateExpiryProvider(), name, {**inputs, "expiries": None, "earliest": None, "renewed": None}, opts,
        )
