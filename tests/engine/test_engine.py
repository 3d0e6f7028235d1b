"""The program under the real Pulumi engine, CLI and provider plugins (no mocks)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from components import procedure
from components.config import Settings, parse
from tests.conftest import with_keys
from components.stage import ON_NODE_IF_REACHABLE, ON_NODE_WITH_HOST_FILE
from tests.harness.libvirt_netns import LibvirtNetns, unavailable_reason
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import PulumiProject, copy_program, require, toolchain_missing

pytestmark = pytest.mark.engine

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def toolchain():
    require(toolchain_missing())


@pytest.fixture(scope="module")
def libvirtd(toolchain):
    """libvirtd in a network namespace of its own: the libvirt provider connects even to preview."""
    require(unavailable_reason())
    with LibvirtNetns() as namespace:
        yield namespace


def dev_project(tmp_path: Path, ssh_keys, namespace=None) -> PulumiProject:
    project = PulumiProject(copy_program(tmp_path / "program", stacks=["dev"]), tmp_path / "state", namespace.run if namespace else None)
    project.state.mkdir()
    project.pulumi("stack", "init", "dev")
    private, public = ssh_keys
    project.pulumi("config", "set", "--path", "ssh.privateKeyPath", str(private))
    project.pulumi("config", "set", "--path", "ssh.publicKeyPath", str(public))
    return project


def provider_project(tmp_path: Path, program: str) -> PulumiProject:
    """A stack of one of the small programs here, which use only providers/."""
    directory = tmp_path / program
    shutil.copytree(HERE / program, directory)
    shutil.copytree(PROJECT_DIR / "providers", directory / "providers", ignore=shutil.ignore_patterns("__pycache__"))
    (directory / ".venv").symlink_to(PROJECT_DIR / ".venv")
    project = PulumiProject(directory, tmp_path / "state")
    project.state.mkdir()
    project.pulumi("stack", "init", "engine")
    return project


def test_token_stack_up_twice_then_destroy_with_the_token_secret_in_state(toolchain, tmp_path):
    project = provider_project(tmp_path, "token_program")

    first = project.pulumi("up", "--yes", "--skip-preview")
    assert "1 created" in first.stdout or "2 created" in first.stdout, first.stdout

    state = project.export_state()
    (token,) = [r for r in state["deployment"]["resources"] if r["type"] == "pulumi-python:dynamic:Resource"]
    outputs = token["outputs"]
    assert "token" in token.get("additionalSecretOutputs", []), token
    assert "ciphertext" in outputs["token"], "the token must be stored encrypted"
    plaintext = json.loads(project.pulumi("stack", "export", "--show-secrets").stdout)
    (revealed,) = [r for r in plaintext["deployment"]["resources"] if r["type"] == "pulumi-python:dynamic:Resource"]
    secret_token = json.loads(revealed["outputs"]["token"]["plaintext"])
    assert len(secret_token) == 23 and secret_token[6] == "."
    assert secret_token not in json.dumps(state), "token plaintext found in the exported state"

    second = project.pulumi("up", "--yes", "--skip-preview")
    assert "2 unchanged" in second.stdout, second.stdout
    project.pulumi("preview", "--expect-no-changes")

    project.pulumi("destroy", "--yes", "--skip-preview")
    assert not project.export_state()["deployment"].get("resources")


def test_a_version_change_is_planned_or_refused_in_preview_against_the_recorded_version(toolchain, tmp_path):
    project = provider_project(tmp_path, "version_program")
    project.pulumi("config", "set", "version", "1.36.3")
    project.pulumi("up", "--yes", "--skip-preview")

    project.pulumi("config", "set", "version", "1.38.0")
    refused = project.pulumi("preview", check=False)
    assert refused.returncode != 0, refused.stdout
    assert "kvm-kubeadm:kubernetes.version 1.36.3 -> 1.38.0: kubeadm upgrades one minor version at a time" in refused.stdout

    project.pulumi("config", "set", "version", "1.37.0")
    planned = project.pulumi("preview", "--diff")
    assert "k8sworker2 (after k8sworker1)" in planned.stdout and "1 to update" in planned.stdout, planned.stdout
    project.pulumi("up", "--yes", "--skip-preview")
    project.pulumi("preview", "--expect-no-changes")
    # The record moved on: going back is now a downgrade.
    project.pulumi("config", "set", "version", "1.36.3")
    assert "kubeadm does not downgrade a cluster" in project.pulumi("preview", check=False).stdout


def test_control_planes_behind_a_vip_are_planned_and_guarded_against_the_recorded_ones(toolchain, tmp_path):
    project = provider_project(tmp_path, "version_program")
    project.pulumi("config", "set", "version", "1.36.3")
    project.pulumi("up", "--yes", "--skip-preview")
    # A cluster made without a VIP cannot get one.
    project.pulumi("config", "set", "controlPlanes", '["k8smaster2", "k8smaster3"]')
    project.pulumi("config", "set", "endpoint", "192.168.56.100:8443")
    refused = project.pulumi("preview", check=False)
    assert refused.returncode != 0 and "kvm-kubeadm:controlPlane.vip: the cluster's endpoint is" in refused.stdout, refused.stdout

    project.pulumi("destroy", "--yes", "--skip-preview")
    planned = project.pulumi("preview", "--diff")
    assert "k8smaster3 (joins after k8smaster2)" in planned.stdout, planned.stdout
    project.pulumi("up", "--yes", "--skip-preview")
    project.pulumi("preview", "--expect-no-changes")
    project.pulumi("config", "set", "controlPlanes", "[]")
    refused = project.pulumi("preview", check=False)
    assert refused.returncode != 0 and "kvm-kubeadm:controlPlane.count: 3 -> 1 control planes" in refused.stdout, refused.stdout
    project.pulumi("config", "set", "controlPlanes", '["k8smaster2", "k8smaster3"]')
    project.pulumi("config", "set", "version", "1.36.4")
    planned = project.pulumi("preview", "--diff")
    assert "k8smaster3 (control plane, after k8smaster2)" in planned.stdout, planned.stdout
    assert "k8sworker1 (after k8smaster3)" in planned.stdout, planned.stdout


def stage_command_types(settings: Settings) -> Counter:
    """Command resources by type, as the procedure declares the stages that the stack asks for."""
    per_role = {"control plane": 1, "joining control plane": len(settings.joining_control_planes),
                "worker": len(settings.workers), "cluster": 1}
    return Counter(
        "command:local:Command" if stage.runs_on in (ON_NODE_IF_REACHABLE, ON_NODE_WITH_HOST_FILE) else "command:remote:Command"
        for role, stages in procedure.ROLES.items()
        for stage in stages
        if stage.wanted(settings)
        for _ in range(per_role[role])
    )


def test_dev_preview_plans_exactly_the_expected_resources(libvirtd, ssh_keys, tmp_path):
    project = dev_project(tmp_path, ssh_keys, libvirtd)
    preview = project.preview_json()
    assert not [d for d in preview.get("diagnostics", []) if d.get("severity") == "error"], preview.get("diagnostics")
    planned = Counter(step["newState"]["type"] for step in preview["steps"] if step["op"] == "create")
    assert {k: v for k, v in planned.items() if not k.startswith("pulumi:providers:")} == {
        "pulumi:pulumi:Stack": 1,
        "kvm:kubeadm:Cluster": 1,
        "kvm:kubeadm:ControlPlane": 1,
        "kvm:kubeadm:Worker": 3,
        "kvm:infra:Network": 1,
        "kvm:infra:Node": 4,
        "libvirt:index/network:Network": 1,
        "libvirt:index/volume:Volume": 9,  # base image, and a root disk and a seed per node
        "libvirt:index/domain:Domain": 4,
        # bootstrap token, control-plane sizing guard, Kubernetes version, certificate expiry
        "pulumi-python:dynamic:Resource": 4,
        **stage_command_types(parse(with_keys(load_stack_config("dev"), ssh_keys), "dev", PROJECT_DIR)),
    }
    assert planned["pulumi:providers:libvirt"] == 1


def test_invalid_config_fails_with_our_message_and_leaves_nothing(libvirtd, ssh_keys, tmp_path):
    project = dev_project(tmp_path, ssh_keys, libvirtd)
    project.pulumi("config", "set", "--path", "controlPlane.vcpu", "1")
    project.pulumi("config", "set", "--path", "network.subnett", "10.0.0.0/24")
    for command in (("preview",), ("up", "--yes", "--skip-preview")):
        result = project.pulumi(*command, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert "invalid stack configuration (2 problem(s))" in output, output
        assert "kvm-kubeadm:controlPlane.vcpu: 1 is below kubeadm's minimum of 2" in output
        assert "kvm-kubeadm:network.subnett: unknown key" in output
        assert "Traceback" not in output, output
    resources = project.export_state()["deployment"].get("resources") or []
    assert [r["type"] for r in resources if r["type"] != "pulumi:pulumi:Stack"] == []
