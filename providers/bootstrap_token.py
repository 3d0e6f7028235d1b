"""Dynamic provider for the kubeadm bootstrap token.

The token is generated here (not by kubeadm) so that it is a Pulumi output that
the joins can depend on. Its expiry is recorded, and ``diff`` asks for a
replacement once the token is expired or close to it, so a worker added weeks
later still joins with a valid token.

This module is re-imported by Pulumi's dynamic-provider process: it must import
cleanly in a fresh interpreter and create no resources at import time.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

TOKEN_FORMAT = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
_ALPHABET = string.ascii_lowercase + string.digits


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_token() -> str:
    """A kubeadm bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`, from a CSPRNG."""
    return f"{_random_text(6)}.{_random_text(16)}"


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class BootstrapTokenProvider(ResourceProvider):
    """CRUD for a token; `clock` is injectable so tests can move time."""

    def __init__(self, clock: Callable[[], float] = time.time):
        super().__init__()
        self.clock = clock

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        for key in ("ttl_seconds", "renew_before_seconds"):
            if not isinstance(news.get(key), (int, float)) or news[key] <= 0:
                failures.append(CheckFailure(key, f"{key} must be a positive number of seconds"))
        if not failures and news["renew_before_seconds"] >= news["ttl_seconds"]:
            failures.append(CheckFailure("renew_before_seconds", "renew_before_seconds must be less than ttl_seconds"))
        return CheckResult(news, failures)

    def _issue(self, inputs: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        expires = now + int(inputs["ttl_seconds"])
        return {
            **inputs,
            "token": generate_token(),
            "expires_epoch": int(expires),
            "expires": rfc3339(expires),
        }

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._issue(props)
        return CreateResult(id_=outs["token"].split(".")[0], outs=outs)

    def needs_renewal(self, olds: dict[str, Any], news: dict[str, Any]) -> bool:
        renew_before = int(news.get("renew_before_seconds", olds.get("renew_before_seconds", 0)))
        expires = olds.get("expires_epoch")
        return expires is None or self.clock() >= int(expires) - renew_before

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if self.needs_renewal(olds, news):
            return DiffResult(changes=True, replaces=["token"], delete_before_replace=False)
        changed = [k for k in ("ttl_seconds", "renew_before_seconds") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only the lifetime settings changed: they apply to the next token, this one stays.
        keep = {k: olds[k] for k in ("token", "expires_epoch", "expires")}
        return UpdateResult(outs={**news, **keep})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # The token expires on its own; nothing to undo on this side.
        return None


class BootstrapToken(pulumi.dynamic.Resource):
    """A kubeadm bootstrap token with a recorded expiry; `token` is secret."""

    token: pulumi.Output[str]
    """The token, `[a-z0-9]{6}.[a-z0-9]{16}` (secret)."""
    expires: pulumi.Output[str]
    """Expiry as RFC 3339 UTC, for people reading the state."""
    expires_epoch: pulumi.Output[int]
    """Expiry in seconds since the epoch, for `kubeadm token create --ttl`."""

    def __init__(
        self,
        name: str,
        ttl_seconds: int,
        renew_before_seconds: int,
        opts: Optional[pulumi.ResourceOptions] = None,
        provider: Optional[BootstrapTokenProvider] = None,
    ):
        secret_outputs = pulumi.ResourceOptions(additional_secret_outputs=["token"])
        super().__init__(
            provider or BootstrapTokenProvider(),
            name,
            {
                "ttl_seconds": ttl_seconds,
                "renew_before_seconds": renew_before_seconds,
                "token": None,
                "expires": None,
                "expires_epoch": None,
            },
            pulumi.ResourceOptions.merge(opts, secret_outputs),
        )
