"""The stages every node runs first: os-prep, then (for a Kubernetes stack) packages."""

from __future__ import annotations

import pulumi
from pulumi_command import remote

from .config import Settings
from .node import Node
from .stage import stage_command


def os_prep_params(settings: Settings, ip: str, ports: tuple[str, ...]) -> dict:
    return {
        "NODE_IP": ip,
        "DNS_DOMAIN": settings.network.domain,
        "FIREWALL": settings.firewall,
        "FIREWALL_PORTS": list(ports),
    }


def packages_params(settings: Settings) -> dict:
    return {
        "KUBE_VERSION": settings.kubernetes.version,
        "KUBE_REPO": f"{settings.mirrors.kube_packages}/v{settings.kubernetes.minor}/deb/",
        "IMAGE_REPOSITORY": settings.mirrors.image_repository,
        "OS_APT_MIRROR": settings.mirrors.os_apt,
    }


class NodeStages:
    """os-prep and packages on one node; `last` is what the node's next stage waits for."""

    def __init__(self, name: str, settings: Settings, node: Node, ports: tuple[str, ...], parent: pulumi.Resource):
        fresh_disk = [node.root_volume.id]  # a new root disk is a new OS: run every stage again
        self.os_prep = stage_command(
            f"{name}-os-prep", "os-prep", node.name, node.connection,
            parent=parent, depends_on=[node.domain], params=os_prep_params(settings, node.ip, ports),
            triggers=fresh_disk,
        )
        self.last: remote.Command = self.os_prep
        self.packages = None
        if settings.stages == "kubernetes":
            self.packages = stage_command(
                f"{name}-packages", "packages", node.name, node.connection,
                parent=parent, depends_on=[self.os_prep], params=packages_params(settings),
                triggers=fresh_disk,
            )
            self.last = self.packages
