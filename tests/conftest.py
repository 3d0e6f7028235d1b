"""Shared fixtures: a throwaway SSH key pair and the committed stack configs pointed at it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.program import load_stack_config  # noqa: E402


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("ssh")
    private = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvm-kubeadm-test", "-f", str(private)], check=True)
    return private, Path(f"{private}.pub")


def with_keys(config: dict, keys: tuple[Path, Path]) -> dict:
    private, public = keys
    return {**config, "ssh": {**config.get("ssh", {}), "privateKeyPath": str(private), "publicKeyPath": str(public)}}


@pytest.fixture
def dev_config(ssh_keys) -> dict:
    """The committed Pulumi.dev.yaml, with the SSH key paths pointed at a throwaway key."""
    return with_keys(load_stack_config("dev"), ssh_keys)


SUITE_ORDER = ("unit", "tools", "engine", "mirror", "e2e")


def pytest_collection_modifyitems(items):
    """Fast, self-contained tests first; the ones that build or boot things last."""

    def rank(item) -> int:
        parts = Path(str(item.fspath)).parts
        return next((i for i, suite in enumerate(SUITE_ORDER) if suite in parts), 0)

    items.sort(key=rank)
