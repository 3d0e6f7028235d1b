"""A worker node: its VM and the worker stages of the procedure (join, ready; drain
and reset when it is removed)."""

from __future__ import annotations

import pulumi
from pulumi_command import remote

from . import procedure
from .config import Settings
from .join_ticket import JoinTicket
from .node import Node, NodeArgs
from .rollout import Rollout
from .stage import Host, StageContext, run_stages


class Worker(pulumi.ComponentResource):
    """`k8sworkerN`: the VM, then `kubeadm join` with the control plane's JoinTicket."""

    node: Node
    """The worker VM."""
    stages: dict[str, remote.Command]
    """Its stages by name (procedure.WORKER, as far as the stack's scope goes)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        node: NodeArgs,
        ticket: JoinTicket | None,
        rollout: Rollout | None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("kvm:kubeadm:Worker", name, None, opts)
        self.node = Node(f"{name}-node", node, opts=pulumi.ResourceOptions(parent=self))
        context = StageContext(
            settings, node.spec, Host(self.node.name, self.node.connection), self.node.root_volume.id, ticket=ticket,
            lifeline=ticket.lifeline if ticket else None,
        )
        provided: dict[str, list[pulumi.Resource]] = {procedure.VM: [self.node.domain]}
        if ticket is not None:
            provided[procedure.JOIN_PREREQUISITES] = list(ticket.prerequisites)
            provided[procedure.POD_NETWORK] = [ticket.pod_network]
        if rollout is not None:
            provided[procedure.KUBERNETES_VERSION] = [rollout.version]
            provided[procedure.ROLLOUT_TURN] = list(rollout.after)
        self.stages = run_stages(procedure.WORKER, name, context, provided, parent=self)
        self.register_outputs({"ip": self.node.ip})
