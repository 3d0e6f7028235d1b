"""The real Pulumi CLI, built by tools/build-toolchain.sh, driving a copy of the project.

Each test works on its own copy of the program (so `pulumi config set` never
touches the committed stack files), with a file:// backend in a temp dir and a
test passphrase: no Pulumi Cloud, no downloads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest
import yaml

from tests.program import PROJECT_DIR

TOOLCHAIN = PROJECT_DIR / ".toolchain"
PROGRAM_FILES = ("Pulumi.yaml", "__main__.py", "components", "providers", "scripts", "requirements.txt")
PASSPHRASE = "kvm-kubeadm-test-passphrase"


def toolchain_missing() -> Optional[str]:
    """Why the real-engine tests cannot run here, or None."""
    wanted = [
        TOOLCHAIN / "bin" / "pulumi",
        TOOLCHAIN / "bin" / "pulumi-language-python",
        TOOLCHAIN / "bin" / "pulumi-resource-pulumi-python",
        TOOLCHAIN / "pulumi-home" / "plugins" / "resource-command-v1.2.1",
        TOOLCHAIN / "pulumi-home" / "plugins" / "resource-libvirt-v0.5.4",
        PROJECT_DIR / ".venv" / "bin" / "python",
    ]
    missing = [str(p.relative_to(PROJECT_DIR)) for p in wanted if not p.exists()]
    return f"missing {', '.join(missing)}: run tools/setup.sh --full" if missing else None


def require(reason: Optional[str]) -> None:
    """Skip with the reason; in CI (CI=true) a missing prerequisite is a failure, never a silent skip."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


Runner = Callable[..., subprocess.CompletedProcess]


@dataclass
class PulumiProject:
    """A working copy of a Pulumi program and a file:// backend for it."""

    directory: Path
    state: Path
    runner: Optional[Runner] = None  # e.g. LibvirtNetns.run, to run inside a namespace
    extra_env: Optional[dict[str, str]] = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PATH=f"{TOOLCHAIN / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            PULUMI_HOME=str(TOOLCHAIN / "pulumi-home"),
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PULUMI_BACKEND_URL=f"file://{self.state}",
            PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        )
        env.update(self.extra_env or {})
        return env

    def pulumi(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        argv = ["pulumi", "--non-interactive", *args]
        if self.runner is not None:
            result = self.runner(argv, check=False, cwd=self.directory, env=self.env, timeout=timeout)
        else:
            result = subprocess.run(
                argv, cwd=self.directory, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def preview_json(self, *args: str) -> dict:
        return json.loads(self.pulumi("preview", "--json", *args).stdout)

    def export_state(self) -> dict:
        return json.loads(self.pulumi("stack", "export").stdout)

    def set_stack_config(self, stack: str, config: dict) -> None:
        """Write Pulumi.<stack>.yaml as a user would have it (the CLI parses it)."""
        document = {"config": {f"kvm-kubeadm:{key}": value for key, value in config.items()}}
        (self.directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def copy_program(destination: Path, stacks: Sequence[str] = ()) -> Path:
    """The program (not the tests), plus the named committed stack files; .venv is linked."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROGRAM_FILES:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, destination / name)
    for stack in stacks:
        shutil.copy(PROJECT_DIR / f"Pulumi.{stack}.yaml", destination / f"Pulumi.{stack}.yaml")
    (destination / ".venv").symlink_to(PROJECT_DIR / ".venv")
    return destination
