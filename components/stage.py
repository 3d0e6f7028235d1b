"""A stage: one script of the procedure, run as root on a node as a remote Command.

`procedure.py` declares each role's stages in order; `run_stages` turns such a
list into pulumi-command remote Commands for one node, wiring up what each
stage waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import shlex

import pulumi
from pulumi_command import local, remote

from .config import NodeSpec, Settings
from .scripts import Value, as_root, render

if TYPE_CHECKING:
    from providers.bootstrap_token import BootstrapToken
    from providers.certificate_expiry import CertificateExpiry

    from .join_ticket import JoinTicket

# How far a stack goes (config key `stages`), in order: a stage runs when its
# scope is the stack's or comes before it.
SCOPES = ("os-prep", "kubernetes")

# Where a stage runs.
ON_NODE = "node"
"""On its node, through the node's SSH connection."""
ON_CONTROL_PLANE = "control plane"
"""On the control plane that admitted the node, with the admin kubeconfig."""
ON_NODE_IF_REACHABLE = "node if reachable"
"""On its node through ssh from the Pulumi host; a node that no longer answers
(a VM lost behind Pulumi's back) is skipped with a warning instead of failing."""
ON_NODE_WITH_HOST_FILE = "node, with a file of the host"
"""On its node through ssh from the Pulumi host, its stdin (base64, one line) followed by a file of the
host (`host_file`): for what must not pass through Pulumi's state, such as a snapshot archive."""
# Each ssh attempt takes up to 3 x 10 s, then 5 s apart: about 20 minutes at the most.
HOST_FILE_SSH_ATTEMPTS = 30
# ssh from the Pulumi host: bounded, and like pulumi-command, without host key checks.
SSH_OPTIONS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ConnectionAttempts=3",
)


def in_scope(scope: str, stack_scope: str) -> bool:
    return SCOPES.index(scope) <= SCOPES.index(stack_scope)


@dataclass(frozen=True)
class Host:
    """Where a stage runs: the node's name (for its log lines) and its SSH connection."""

    name: str
    connection: remote.ConnectionArgs


@dataclass(frozen=True)
class StageContext:
    """What a node's stage parameters and stdin are computed from."""

    settings: Settings
    node: NodeSpec
    """The node the stages are for."""
    host: Host
    """That node's SSH access."""
    root_disk: pulumi.Input[str]
    """The node's root volume id: a new disk is a new OS."""
    bootstrap_token: Optional["BootstrapToken"] = None
    """On the control plane that bootstraps the cluster."""
    ticket: Optional["JoinTicket"] = None
    """On a node that joins the cluster."""
    lifeline: Optional[pulumi.Resource] = None
    """The leader's VM, where a stage is `skipped_on_cluster_destroy`: when it goes, the whole cluster goes."""
    certificates: Optional["CertificateExpiry"] = None
    """The control planes' certificate check (the cluster's stages)."""


def _no_params(_: StageContext) -> dict[str, Value]:
    return {}


def _nothing(_: StageContext) -> list[pulumi.Input]:
    return []


def _always(_: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Undo:
    """The script that undoes a stage when its resource is deleted."""

    script: str
    params: Callable[[StageContext], dict[str, Value]] = _no_params


@dataclass(frozen=True)
class Stage:
    """One step of a role's procedure: scripts/<name>.sh, run as root on a node."""

    name: str
    """The resource name's suffix, and the script unless `script` names another."""
    after: tuple[str, ...]
    """What it waits for: earlier stages of the role by name, or what the role provides."""
    params: Callable[[StageContext], dict[str, Value]] = _no_params
    """The script's parameters (never secrets)."""
    stdin: Optional[Callable[[StageContext], pulumi.Input[str]]] = None
    """Secret input (token, CA hash): kept secret, never on a command line."""
    scope: str = "kubernetes"
    """The first scope (see SCOPES) that includes this stage."""
    creates: bool = True
    """False for a resource that only acts when it is deleted (see `undo`)."""
    undo: Optional[Undo] = None
    """What deleting it runs."""
    runs_on: str = ON_NODE
    """ON_NODE, ON_CONTROL_PLANE, ON_NODE_IF_REACHABLE or ON_NODE_WITH_HOST_FILE."""
    reruns_on: Callable[[StageContext], list[pulumi.Input]] = _nothing
    """Values whose change runs the stage again."""
    keeps_stdin: bool = False
    """A changed stdin (a refreshed token) does not run it again."""
    secret_stdout: bool = False
    """Its stdout is a secret: kept secret in state and never logged."""
    skipped_on_cluster_destroy: bool = False
    """Its undo is pointless when the whole cluster goes (deleted with the leader's VM)."""
    on_change_only: bool = False
    """Runs when its inputs change, not when it is created (an upgrade step: a new node is at the version already)."""
    wanted: Callable[[Settings], bool] = _always
    """Whether the config asks for it (an addon's switch); turned off, its resource goes and `undo` runs."""
    host_file: Optional[Callable[[StageContext], str]] = None
    """The file of the host sent after its stdin (ON_NODE_WITH_HOST_FILE)."""
    script: str = ""
    """scripts/<script>.sh, where one role's step differs from another's of the same name (a control plane's join)."""

    @property
    def script_name(self) -> str:
        return self.script or self.name


def _ssh(context: StageContext) -> str:
    """The ssh command line from the Pulumi host to the node."""
    return shlex.join([
        "ssh", "-i", str(context.settings.ssh.private_key_path.expanduser()), *SSH_OPTIONS,
        f"{context.settings.ssh.user}@{context.node.ip}",
    ])


def _with_host_file(context: StageContext, command: str, host_file: str) -> str:
    """A local shell command that runs `command` on the node over ssh, with the local stdin as one base64
    line and then `host_file` as the remote stdin. A new VM refuses connections while it boots, and once
    more while cloud-init restarts sshd (seen on a real run): ssh's own failure (255) is tried again, bounded."""
    send = f"{{ printf '%s\\n' \"$stdin\"; cat {shlex.quote(host_file)}; }} | {_ssh(context)} {shlex.quote(command)}"
    return (
        f"stdin=$(base64 -w0); for _ in $(seq {HOST_FILE_SSH_ATTEMPTS}); do {send}; rc=$?; "
        f'[ "$rc" -eq 255 ] || exit "$rc"; sleep 5; done; exit 255'
    )


def _if_reachable(context: StageContext, command: str) -> str:
    """A local shell command that runs `command` on the node over ssh, or warns when it does not answer."""
    ssh = _ssh(context)
    warning = f"warning: {context.node.name} ({context.node.ip}) does not answer over SSH; skipped"
    return f"if ! {ssh} true; then echo {shlex.quote(warning)} >&2; exit 0; fi; exec {ssh} {shlex.quote(command)}"


def run_stages(
    stages: Sequence[Stage],
    prefix: str,
    context: StageContext,
    provided: Mapping[str, Sequence[pulumi.Resource]],
    parent: pulumi.Resource,
) -> dict[str, remote.Command | local.Command]:
    """The Commands of `stages` in the stack's scope, by stage name. `provided` maps the
    names a stage may wait for, besides earlier stages, to resources; an earlier stage
    that the config does not ask for is not waited for."""
    done: dict[str, remote.Command | local.Command] = {}
    unwanted = set()
    for stage in stages:
        if not in_scope(stage.scope, context.settings.scope):
            continue
        if not stage.wanted(context.settings):
            unwanted.add(stage.name)
            continue
        waits_for: list[pulumi.Resource] = []
        for name in stage.after:
            if name in done:
                waits_for.append(done[name])
            elif name in unwanted:
                continue
            elif name in provided:
                waits_for.extend(provided[name])
            else:
                raise ValueError(f"stage {stage.name} waits for {name!r}: no earlier stage or provided resource")
        host = context.ticket.admin if stage.runs_on == ON_CONTROL_PLANE else context.host
        script = as_root(render(stage.script_name, host.name, stage.params(context))) if stage.creates else None
        create, update = (None, script) if stage.on_change_only else (script, None)
        delete = as_root(render(stage.undo.script, host.name, stage.undo.params(context))) if stage.undo else None
        if stage.runs_on == ON_NODE_IF_REACHABLE:
            command, where = local.Command, {}
            create, update, delete = (_if_reachable(context, c) if c else None for c in (create, update, delete))
        elif stage.runs_on == ON_NODE_WITH_HOST_FILE:
            command, where = local.Command, {}
            create = _with_host_file(context, create, stage.host_file(context))
        else:
            command, where = remote.Command, {"connection": host.connection}
        done[stage.name] = command(
            f"{prefix}-{stage.name}",
            **where,
            create=create,
            update=update,
            delete=delete,
            stdin=pulumi.Output.secret(stage.stdin(context)) if stage.stdin else None,
            triggers=stage.reruns_on(context) or None,
            logging="none" if stage.secret_stdout else "stdoutAndStderr",
            # Previous outputs would travel as SSH environment, which sshd refuses and which may be secret.
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=parent,
                depends_on=waits_for,
                additional_secret_outputs=["stdout", "stderr"] if stage.secret_stdout else None,
                ignore_changes=["stdin"] if stage.keeps_stdin else None,
                deleted_with=context.lifeline if stage.skipped_on_cluster_destroy else None,
                delete_before_replace=True,
            ),
        )
    return done
