"""Dynamic provider that stops a control-plane resize unless the user opted in.

libvirt cannot change a domain's vCPU or memory in place: the provider replaces
the domain. For the control plane that reboots the API server, so a change of
its size must be asked for explicitly. This resource records the size; its
`check` fails, naming the config keys, when the size changes without the opt-in.
The domain depends on it, so nothing is replaced when it fails.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

SIZE_KEYS = {"vcpu": "vcpu", "memory_mib": "memoryMiB"}


def _number(value: Any) -> Any:
    """Numbers come back from the engine as floats; show 2, not 2.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class SizingGuardProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Refuse a resize without the opt-in: a check failure is reported cleanly, before any diff."""
        resized = [key for key in SIZE_KEYS if olds and _number(olds.get(key)) != _number(news.get(key))]
        if not resized or news.get("allow_replace"):
            return CheckResult(news, [])
        changes = ", ".join(
            f"{news['config_prefix']}.{SIZE_KEYS[key]} {_number(olds.get(key))} -> {_number(news.get(key))}" for key in resized
        )
        reason = (
            f"{changes}: libvirt replaces the {news['node']} VM for that (it reboots on the same disk, "
            f"and the API server is down meanwhile). Set {news['config_prefix']}.allowReplace to true to proceed, "
            "or put the old size back."
        )
        return CheckResult(news, [CheckFailure(resized[0], reason)])

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["node"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = any(_number(olds.get(k)) != _number(news.get(k)) for k in news if k != "__provider")
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

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
