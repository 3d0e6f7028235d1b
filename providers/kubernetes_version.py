"""Dynamic provider that plans a change of the cluster's Kubernetes version, or refuses it.

kubeadm upgrades a cluster one minor version at a time, control plane first, and
never downgrades. This resource records the version the cluster was last set to
and its nodes. Its `check` compares the configured version with that record: a
change kubeadm cannot make fails, naming the config key; any other change gets
the rollout plan added to the inputs, so that `pulumi preview` shows which node
is upgraded in which order. Every Kubernetes stage waits for this resource, so a
refusal stops the deployment before anything on a node changes.

With a VIP it records the cluster's endpoint and the control planes that join the
leader too: a changed endpoint (kubeadm fixes it at init) or a control-plane count
that would lose etcd's quorum is refused the same way, and the plan shows the order
in which control planes join or leave.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
TRACKED = ("version", "control_plane", "workers", "concurrency", "control_planes", "endpoint")


def parse_version(text: Any) -> Optional[tuple[int, int, Optional[int]]]:
    """(major, minor, patch or None), or None for anything that is not MAJOR.MINOR[.PATCH]."""
    match = VERSION.match(text) if isinstance(text, str) else None
    if not match:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), None if patch is None else int(patch)


def refusal(old: Any, new: Any) -> Optional[str]:
    """Why kubeadm cannot move a cluster from version `old` to `new`, or None."""
    before, after = parse_version(old), parse_version(new)
    if before is None or after is None:
        return "these are not both MAJOR.MINOR or MAJOR.MINOR.PATCH versions, so the change cannot be planned"
    if before[0] != after[0]:
        return f"kubeadm does not change the major version. Put {old} back"
    if after[1] < before[1] or (after[1] == before[1] and None not in (before[2], after[2]) and after[2] < before[2]):
        return f"kubeadm does not downgrade a cluster. Put {old} back; an older version needs a new cluster"
    if after[1] > before[1] + 1:
        step = f"{before[0]}.{before[1] + 1}"
        return f"kubeadm upgrades one minor version at a time. Set {step} first and `pulumi up`, then {new}"
    return None


def upgrades(old: str, new: str) -> bool:
    """Whether nodes at `old` need work to be at `new` (1.36.3 already satisfies 1.36)."""
    before, after = parse_version(old), parse_version(new)
    return after[1] > before[1] or (after[2] is not None and after[2] != before[2])


def _control_planes(props: dict[str, Any]) -> list[str]:
    """Every control plane in the record, the leader first (a record without a VIP has the leader only)."""
    return [props["control_plane"], *(props.get("control_planes") or [])]


def membership_refusal(olds: dict[str, Any], news: dict[str, Any]) -> Optional[tuple[str, str]]:
    """(config key, why) when the cluster cannot take the new endpoint or control planes, or None."""
    project = news["config_key"].split(":", 1)[0]
    if olds.get("endpoint") != news.get("endpoint"):
        old = olds.get("endpoint") or "the leader's own address (no VIP)"
        return (f"{project}:controlPlane.vip",
                f"the cluster's endpoint is {old}: kubeadm writes it into every certificate and kubeconfig at init, so "
                "it cannot change on a live cluster. Put it back; a cluster that may grow needs controlPlane.vip from "
                "its first up")
    before, after = len(_control_planes(olds)), len(_control_planes(news))
    majority = before // 2 + 1
    if after < majority:
        least = majority + 1 - majority % 2  # the count is odd
        return (f"{project}:controlPlane.count",
                f"{before} -> {after} control planes would remove a majority of etcd's {before} members, and with "
                f"them the quorum that each removal needs. Keep at least {least} (odd, and a majority of {before})")
    return None


def rollout_plan(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """One line per node, in the order the stages run: the leader, the other control planes one at a
    time, then the workers."""
    old, new = olds["version"], news["version"]
    if not upgrades(old, new):
        return []
    existing = {*_control_planes(olds), *olds.get("workers", [])}
    concurrency = int(news["concurrency"])
    repo = f"repo v{'.'.join(new.split('.')[:2])}, " if parse_version(new)[1] != parse_version(old)[1] else ""
    leader, *joining = _control_planes(news)
    workers = list(news["workers"])
    plan = [f"{leader} (control plane, first): {repo}kubeadm {new}, upgrade plan and apply, drain, kubelet and kubectl, uncordon"]
    before = leader
    for control_plane in joining:
        if control_plane not in existing:
            plan.append(f"{control_plane} (new control plane): installs {new} and joins once {before} is upgraded")
        else:
            plan.append(f"{control_plane} (control plane, after {before}): {repo}kubeadm {new}, upgrade node, drain, "
                        "kubelet and kubectl, uncordon")
        before = control_plane
    for index, worker in enumerate(workers):
        if worker not in existing:
            plan.append(f"{worker} (new): installs {new} and joins once {before} is upgraded; not in the rollout")
            continue
        after = workers[index - concurrency] if index >= concurrency else before
        plan.append(f"{worker} (after {after}): {repo}kubeadm {new}, upgrade node, drain, kubelet and kubectl, uncordon, Ready")
    return plan


def membership_plan(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """With a VIP: the control planes that join, in order, and those that leave (none without a change)."""
    if news.get("control_planes") is None:
        return []
    existing = _control_planes(olds) if olds else []
    leader, *joining = _control_planes(news)
    plan = [] if olds else [f"{leader} (leader): kubeadm init behind {news['endpoint']}"]
    before = leader
    for control_plane in joining:
        if control_plane not in existing:
            plan.append(f"{control_plane} (joins after {before}): certificates uploaded, kubeadm join --control-plane, "
                        "etcd member healthy")
        before = control_plane
    plan += [f"{control_plane} (leaves): drain, etcd member removed, Node deleted, kubeadm reset, VM deleted"
             for control_plane in existing if control_plane not in joining and control_plane != leader]
    return plan


def _tracked(props: dict[str, Any]) -> dict[str, Any]:
    """What a change is judged on; numbers come back from the engine as floats."""
    return {**{key: props.get(key) for key in TRACKED}, "concurrency": int(props.get("concurrency") or 0)}


class KubernetesVersionProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """A check failure is reported cleanly, in preview, before any diff or step runs."""
        if olds and (refused := membership_refusal(olds, news)):
            key, why = refused
            return CheckResult(news, [CheckFailure(key.rsplit(".", 1)[-1], f"{key}: {why}.")])
        if not olds or olds.get("version") == news.get("version"):
            return CheckResult({**news, "plan": membership_plan(olds, news)}, [])
        problem = refusal(olds.get("version"), news.get("version"))
        if problem:
            reason = f"{news['config_key']} {olds.get('version')} -> {news.get('version')}: {problem}."
            return CheckResult(news, [CheckFailure("version", reason)])
        return CheckResult({**news, "plan": membership_plan(olds, news) + rollout_plan(olds, news)}, [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="kubernetes-version", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # The plan follows from the rest: only what it is computed from makes a change.
        return DiffResult(changes=_tracked(olds) != _tracked(news), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)


class KubernetesVersion(pulumi.dynamic.Resource):
    """The version the cluster was last set to, and the plan of a change of it (or, with a VIP, of its
    control planes)."""

    plan: pulumi.Output[list[str]]
    """The control planes' joins and departures, then the rollout of a version change, one line per node in
    order (empty without a change)."""

    def __init__(
        self,
        name: str,
        version: str,
        control_plane: str,
        workers: list[str],
        concurrency: int,
        config_key: str,
        control_planes: Optional[list[str]] = None,
        endpoint: Optional[str] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        """`control_planes` (those that join the leader, in order) and `endpoint`: with a VIP only; None
        leaves them out of the record."""
        super().__init__(
            KubernetesVersionProvider(),
            name,
            {
                "version": version,
                "control_plane": control_plane,
                "workers": workers,
                "concurrency": concurrency,
                "config_key": config_key,
                "control_planes": control_planes,
                "endpoint": endpoint,
                "plan": None,
            },
            opts,
        )
