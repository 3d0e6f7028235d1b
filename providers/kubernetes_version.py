"""Dynamic provider that plans a change of the cluster's Kubernetes version, or refuses it.

kubeadm upgrades a cluster one minor version at a time, control plane first, and
never downgrades. This resource records the version the cluster was last set to
and its nodes. Its `check` compares the configured version with that record: a
change kubeadm cannot make fails, naming the config key; any other change gets
the rollout plan added to the inputs, so that `pulumi preview` shows which node
is upgraded in which order. Every Kubernetes stage waits for this resource, so a
refusal stops the deployment before anything on a node changes.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
TRACKED = ("version", "control_plane", "workers", "concurrency")


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


def rollout_plan(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """One line per node, in the order the stages run: control plane, then the workers."""
    old, new = olds["version"], news["version"]
    if not upgrades(old, new):
        return []
    existing = {olds["control_plane"], *olds.get("workers", [])}
    concurrency = int(news["concurrency"])
    repo = f"repo v{'.'.join(new.split('.')[:2])}, " if parse_version(new)[1] != parse_version(old)[1] else ""
    control_plane, workers = news["control_plane"], list(news["workers"])
    plan = [
        f"{control_plane} (control plane, first): {repo}kubeadm {new}, upgrade plan and apply, drain, kubelet and kubectl, uncordon"
    ]
    for index, worker in enumerate(workers):
        if worker not in existing:
            plan.append(f"{worker} (new): installs {new} and joins once {control_plane} is upgraded; not in the rollout")
            continue
        after = workers[index - concurrency] if index >= concurrency else control_plane
        plan.append(f"{worker} (after {after}): {repo}kubeadm {new}, upgrade node, drain, kubelet and kubectl, uncordon, Ready")
    return plan


def _tracked(props: dict[str, Any]) -> dict[str, Any]:
    """What a change is judged on; numbers come back from the engine as floats."""
    return {**{key: props.get(key) for key in TRACKED}, "concurrency": int(props.get("concurrency") or 0)}


class KubernetesVersionProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """A check failure is reported cleanly, in preview, before any diff or step runs."""
        if not olds or olds.get("version") == news.get("version"):
            return CheckResult({**news, "plan": []}, [])
        problem = refusal(olds.get("version"), news.get("version"))
        if problem:
            reason = f"{news['config_key']} {olds.get('version')} -> {news.get('version')}: {problem}."
            return CheckResult(news, [CheckFailure("version", reason)])
        return CheckResult({**news, "plan": rollout_plan(olds, news)}, [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="kubernetes-version", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # The plan follows from the rest: only what it is computed from makes a change.
        return DiffResult(changes=_tracked(olds) != _tracked(news), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)


class KubernetesVersion(pulumi.dynamic.Resource):
    """The version the cluster was last set to, and the plan of a change of it."""

    plan: pulumi.Output[list[str]]
    """The rollout of the last version change, one line per node in order (empty without a change)."""

    def __init__(
        self,
        name: str,
        version: str,
        control_plane: str,
        workers: list[str],
        concurrency: int,
        config_key: str,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__(
            KubernetesVersionProvider(),
            name,
            {
                "version": version,
                "control_plane": control_plane,
                "workers": workers,
                "concurrency": concurrency,
                "config_key": config_key,
                "plan": None,
            },
            opts,
        )
