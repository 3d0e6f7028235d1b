"""Where a node stands in a change of `kubernetes.version`."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from providers.kubernetes_version import KubernetesVersion


@dataclass(frozen=True)
class Rollout:
    """What a node's Kubernetes stages wait for, besides its own earlier stages."""

    version: KubernetesVersion
    """Plans or refuses a version change; every Kubernetes stage waits for it."""
    after: tuple[pulumi.Resource, ...] = ()
    """The upgrade that finishes before this node's starts (the control plane's, or an earlier worker's)."""
