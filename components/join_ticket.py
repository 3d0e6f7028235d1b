"""What the control plane that bootstraps the cluster hands every node that joins it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from .stage import Host


@dataclass(frozen=True)
class JoinTicket:
    """Everything a join needs from the control plane, and nothing else of it."""

    endpoint: str
    """API server `address:port` that nodes discover the cluster through."""
    token: pulumi.Output[str]
    """Bootstrap token (secret)."""
    ca_hash: pulumi.Output[str]
    """`sha256:<hex>` of the cluster CA's public key (secret)."""
    prerequisites: tuple[pulumi.Resource, ...]
    """What a join waits for: the initialised cluster, the registered token, the CA hash, and
    during a version change the upgraded control plane."""
    pod_network: pulumi.Resource
    """The pod network rolled out; a node turns Ready only after it."""
    admin: Host
    """The control plane, with the admin kubeconfig: drains and deletes a leaving node."""
    lifeline: pulumi.Resource
    """The leader's VM: when it goes, the whole cluster goes, and per-node teardown is skipped."""
    certificate_key: Optional[pulumi.Output[str]] = None
    """The key of the control-plane certificates in the kubeadm-certs Secret (secret; with a VIP only):
    what a control plane needs besides."""
