"""One remote stage = one pulumi-command remote.Command running one rendered script as root."""

from __future__ import annotations

from typing import Optional, Sequence

import pulumi
from pulumi_command import remote

from .scripts import Value, as_root, render


def stage_command(
    resource_name: str,
    stage: Optional[str],
    host_name: str,
    connection: remote.ConnectionArgs,
    *,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource],
    params: Optional[dict[str, Value]] = None,
    stdin: Optional[pulumi.Input[str]] = None,
    secret_stdout: bool = False,
    delete_stage: Optional[tuple[str, dict[str, Value]]] = None,
    triggers: Optional[Sequence[pulumi.Input]] = None,
    ignore_changes: Optional[list[str]] = None,
    deleted_with: Optional[pulumi.Resource] = None,
) -> remote.Command:
    """Run scripts/<stage>.sh on `host_name`; stdin (always secret) carries any secret it needs.

    `stage` may be None for a resource that only acts when it is deleted.
    With `secret_stdout`, stdout is secret in state and the command's output is not logged.
    `delete_stage` names the script that undoes the stage when the resource is deleted.
    """
    return remote.Command(
        resource_name,
        connection=connection,
        create=as_root(render(stage, host_name, params)) if stage else None,
        delete=as_root(render(delete_stage[0], host_name, delete_stage[1])) if delete_stage else None,
        stdin=pulumi.Output.secret(stdin) if stdin is not None else None,
        triggers=triggers,
        logging=remote.Logging.NONE if secret_stdout else remote.Logging.STDOUT_AND_STDERR,
        # Previous outputs would travel as SSH environment, which sshd refuses and which may be secret.
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            additional_secret_outputs=["stdout", "stderr"] if secret_stdout else None,
            ignore_changes=ignore_changes,
            deleted_with=deleted_with,
            delete_before_replace=True,
        ),
    )
