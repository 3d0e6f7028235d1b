"""Dynamic provider for kubeadm's certificate key: the AES-256 key, 64 hex digits, that encrypts the
control-plane certificates in the kubeadm-certs Secret, from which a joining control plane takes them.

Generated here (not by `kubeadm certs certificate-key`) so that it is a Pulumi secret that the
uploads and the joins depend on. It never expires: the Secret does, after two hours, and is
uploaded afresh before each join (procedure.JOINING_CONTROL_PLANE).

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider

KEY_FORMAT = re.compile(r"^[0-9a-f]{64}$")


def generate_key() -> str:
    """32 bytes from a CSPRNG, as the 64 lowercase hex digits kubeadm takes."""
    return secrets.token_hex(32)


class CertificateKeyProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        key = generate_key()
        # The id is state in plain text: a digest-free name, never a part of the key.
        return CreateResult(id_="certificate-key", outs={**props, "key": key})

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=False, replaces=[], delete_before_replace=False)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # The Secret it encrypts expires on its own; nothing to undo.
        return None


class CertificateKey(pulumi.dynamic.Resource):
    """kubeadm's certificate key; `key` is secret."""

    key: pulumi.Output[str]
    """64 hex digits (secret)."""

    def __init__(self, name: str, opts: Optional[pulumi.ResourceOptions] = None,
                 provider: Optional[CertificateKeyProvider] = None):
        secret_outputs = pulumi.ResourceOptions(additional_secret_outputs=["key"])
        super().__init__(provider or CertificateKeyProvider(), name, {"key": None},
                         pulumi.ResourceOptions.merge(opts, secret_outputs))
