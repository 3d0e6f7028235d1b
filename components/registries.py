"""containerd's registry hosts: the files of /etc/containerd/certs.d, from stack config.

containerd reads `certs.d/<host>/hosts.toml` for every image it pulls from
<host> once its CRI plugin's `config_path` points there (config version 2 and
versions 3/4 keep that key in different tables; scripts/packages.sh sets it).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from .config import RegistryAccess

PULL_CAPABILITIES = ["pull", "resolve"]
# Where a registry's API lives when it differs from the name images use.
API_SERVERS = {"docker.io": "https://registry-1.docker.io"}
IMPLIED_REGISTRY = "docker.io"
"""The registry of an image name that names none, as the kubelet and containerd's CRI read it."""


def _toml(value: object) -> str:
    """A TOML string or array of strings: JSON's quoting is valid TOML for both."""
    return json.dumps(value)


def _ca_path(host: str, seen_from: str) -> str:
    """Where hosts.toml of `seen_from` finds the CA of `host`: containerd resolves a
    relative path against that file's directory, so certs.d works wherever it lies."""
    return "ca.crt" if host == seen_from else f"../{host}/ca.crt"


def hosts_toml(registry: RegistryAccess, by_host: dict[str, RegistryAccess]) -> str:
    """The hosts.toml of one registry: its own server and trust, then each mirror with the mirror host's trust."""
    scheme = "http" if registry.plain_http else "https"
    lines = [f"server = {_toml(API_SERVERS.get(registry.host, f'{scheme}://{registry.host}'))}"]
    if registry.ca_pem:
        lines.append(f"ca = {_toml(_ca_path(registry.host, registry.host))}")
    for mirror in registry.mirrors:
        lines += ["", f"[host.{_toml(mirror)}]", f"  capabilities = {_toml(PULL_CAPABILITIES)}"]
        mirror_host = by_host.get(urlsplit(mirror).netloc)
        if mirror_host is not None and mirror_host.ca_pem:
            lines.append(f"  ca = {_toml(_ca_path(mirror_host.host, registry.host))}")
    return "\n".join(lines) + "\n"


def certs_d_files(registries: tuple[RegistryAccess, ...]) -> dict[str, str]:
    """Path under certs.d -> content: a hosts.toml per registry, and its CA where it has one."""
    by_host = {registry.host: registry for registry in registries}
    files = {}
    for registry in registries:
        files[f"{registry.host}/hosts.toml"] = hosts_toml(registry, by_host)
        if registry.ca_pem:
            files[f"{registry.host}/ca.crt"] = registry.ca_pem
    return files
