"""Dynamic provider that stops a control-plane resize unless the user opted in.

libvirt cannot change a domain's vCPU or memory in place: the provider replaces
the domain. For the control plane that reboots the API server, so a change of
its size must be asked for explicitly. This resource records the size; its
`diff` fails, naming the config keys, when the size changes without the opt-in.
The domain depends on it, so nothing is replaced when it fails.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

SIZE_KEYS = {"vcpu": "vcpu", "memory_mib": "memoryMiB"}


class ResizeNotAllowed(Exception):
    """A control-plane size change without `controlPlane.allowReplace`."""


class SizingGuardProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["node"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        resized = [key for key in SIZE_KEYS if olds.get(key) != news.get(key)]
        if resized and not news.get("allow_replace"):
            changes = ", ".join(
                f"{news['config_prefix']}.{SIZE_KEYS[key]} {olds.get(key)} -> {news.get(key)}" for key in resized
            )
            raise ResizeNotAllowed(
                f"{changes}: libvirt replaces the {news['node']} VM for that (it reboots on the same disk, "
                f"and the API server is down meanwhile). Set {news['config_prefix']}.allowReplace to true to proceed, "
                "or put the old size back."
            )
        return DiffResult(changes=olds != news, replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)


class SizingGuard(pulumi.dynamic.Resource):
    """Records a node's size; refuses a resize without the opt-in."""

    def __init__(
        self,
        name: str,
        node: str,
        vcpu: int,
        memory_mib: int,
        allow_replace: bool,
        config_prefix: str,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__(
            SizingGuardProvider(),
            name,
            {
                "node": node,
                "vcpu": vcpu,
                "memory_mib": memory_mib,
                "allow_replace": allow_replace,
                "config_prefix": config_prefix,
            },
            opts,
        )
