"""A control-plane node: its VM and the control-plane stages of the procedure. The
leader (the first control plane) runs kubeadm init and hands out the JoinTicket; the
others join its cluster as control planes with that ticket."""

from __future__ import annotations

import dataclasses

import pulumi
from pulumi_command import remote

from providers.bootstrap_token import BootstrapToken
from providers.certificate_key import CertificateKey

from . import kubeadm, procedure
from .config import Settings
from .join_ticket import JoinTicket
from .node import Node, NodeArgs
from .rollout import Rollout
from .stage import Host, StageContext, in_scope, run_stages


class ControlPlane(pulumi.ComponentResource):
    """`k8smaster` in the procedure: the VM, then kubeadm init and what the workers need to join;
    or, behind a VIP, a further control plane that joins it."""

    node: Node
    """The control-plane VM."""
    stages: dict[str, remote.Command]
    """Its stages by name (procedure.CONTROL_PLANE or JOINING_CONTROL_PLANE, as far as the stack's scope goes)."""
    token: pulumi.Output[str] | None
    """Bootstrap token (secret; the leader's, None in an os-prep-only stack)."""
    ca_hash: pulumi.Output[str] | None
    """`sha256:<hex>` of the cluster CA's public key (secret; the leader's)."""
    ticket: JoinTicket | None
    """What a joining node needs from this control plane (the leader's)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        node: NodeArgs,
        rollout: Rollout | None,
        joins: JoinTicket | None = None,
        turn: tuple[pulumi.Resource, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`joins`: the leader's ticket, for a control plane that joins; `turn`: what its VM and its join wait
        for (the control plane that joins before it)."""
        super().__init__("kvm:kubeadm:ControlPlane", name, None, opts)
        # Its VM boots in its turn too: under emulation on two cores, guests that booted beside a join
        # starved it, and one never got its DHCP lease (README: Three control planes behind a VIP).
        self.node = Node(f"{name}-node", dataclasses.replace(node, boots_after=turn), opts=pulumi.ResourceOptions(parent=self))
        host = Host(self.node.name, self.node.connection)
        context = StageContext(settings, node.spec, host, self.node.root_volume.id)
        provided: dict[str, list[pulumi.Resource]] = {procedure.VM: [self.node.domain]}
        if rollout is not None:
            provided[procedure.KUBERNETES_VERSION] = [rollout.version]
        self.token = self.ca_hash = self.ticket = None
        if joins is not None:
            context = dataclasses.replace(context, ticket=joins, lifeline=joins.lifeline)
            provided[procedure.JOIN_PREREQUISITES] = list(joins.prerequisites)
            provided[procedure.CONTROL_PLANE_TURN] = list(turn)
            provided[procedure.ROLLOUT_TURN] = list(rollout.after) if rollout else []
            self.stages = run_stages(procedure.JOINING_CONTROL_PLANE, name, context, provided, parent=self)
            self.register_outputs({"ip": self.node.ip})
            return

        bootstrap_token = None
        if in_scope("kubernetes", settings.scope):
            ttl = settings.kubernetes.token_ttl_hours * 3600
            bootstrap_token = BootstrapToken(
                f"{name}-bootstrap-token", ttl_seconds=ttl, renew_before_seconds=ttl // 4,
                opts=pulumi.ResourceOptions(parent=self),
            )
            provided[procedure.BOOTSTRAP_TOKEN] = [bootstrap_token]
            context = dataclasses.replace(context, bootstrap_token=bootstrap_token)
        self.stages = run_stages(procedure.CONTROL_PLANE, name, context, provided, parent=self)

        if bootstrap_token is not None:
            self.token = pulumi.Output.secret(bootstrap_token.token)
            self.ca_hash = pulumi.Output.secret(self.stages["ca-hash"].stdout.apply(str.strip))
            # With a VIP the cluster can have control planes join, now or later.
            certificate_key = None
            if settings.vip is not None:
                certificate_key = pulumi.Output.secret(
                    CertificateKey(f"{name}-certificate-key", opts=pulumi.ResourceOptions(parent=self)).key
                )
            self.ticket = JoinTicket(
                endpoint=kubeadm.api_endpoint(settings),
                token=self.token,
                ca_hash=self.ca_hash,
                prerequisites=tuple(self.stages[stage] for stage in procedure.JOIN_NEEDS),
                pod_network=self.stages["cni"],
                admin=host,
                lifeline=self.node.domain,
                certificate_key=certificate_key,
            )
        self.register_outputs({"ip": self.node.ip, "ca_hash": self.ca_hash})
