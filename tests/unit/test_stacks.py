"""Every committed stack file builds under mocks, and stacks can share one host."""

from __future__ import annotations

import ipaddress
import shutil

import pytest
import yaml

from components.config import ConfigError, parse
from tests.conftest import with_keys
from tests.program import COMMAND, DOMAIN, NETWORK, PROJECT_DIR, VOLUME, load_stack_config, run_program

STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
LIBVIRT_TYPES = (DOMAIN, NETWORK, VOLUME)


def test_the_committed_stacks_are_dev_single_and_lab():
    assert {"dev", "single", "lab"} <= set(STACKS)


@pytest.fixture(scope="module")
def runs(ssh_keys):
    return {stack: run_program(with_keys(load_stack_config(stack), ssh_keys), stack=stack) for stack in STACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_stack_builds_under_mocks(runs, ssh_keys, stack):
    run = runs[stack]
    assert run.error is None, f"{stack}: {run.error}"
    settings = parse(with_keys(load_stack_config(stack), ssh_keys), stack, PROJECT_DIR)
    assert len(run.of_type(DOMAIN)) == len(settings.nodes)


@pytest.mark.parametrize("stack", STACKS)
def test_libvirt_names_are_prefixed_with_the_stack(runs, stack):
    named = [r for r in runs[stack].registrations if r.type in LIBVIRT_TYPES]
    assert named
    for resource in named:
        assert resource.inputs["name"].startswith(f"{stack}-"), resource.urn


def test_no_two_stacks_share_a_libvirt_name_or_subnet(runs):
    names: dict[str, str] = {}
    subnets: dict[str, ipaddress.IPv4Network] = {}
    for stack, run in runs.items():
        for resource in (r for r in run.registrations if r.type in LIBVIRT_TYPES):
            name = resource.inputs["name"]
            assert name not in names, f"{name} in {stack} and {names[name]}"
            names[name] = stack
        (network,) = run.of_type(NETWORK)
        subnets[stack] = ipaddress.IPv4Network(network.inputs["addresses"][0])
    for a in subnets:
        for b in subnets:
            assert a == b or not subnets[a].overlaps(subnets[b]), (a, b)


def test_single_stack_is_a_schedulable_control_plane_only(runs):
    run = runs["single"]
    assert len(run.of_type(DOMAIN)) == 1 and run.commands("join") == []
    (init,) = run.commands("init")
    documents = list(yaml.safe_load_all(init.inputs["stdin"]))
    assert documents[0]["nodeRegistration"]["taints"] == []
    (ready,) = [c for c in run.commands("ready")]
    assert "readonly -a WAIT_FOR_NODES=(k8smaster)" in ready.inputs["create"]
    assert run.resolve(run.exports["workerIps"])[0] == []


def test_lab_stack_has_six_workers(runs):
    assert len(runs["lab"].commands("join")) == 6


def test_a_new_stack_overlapping_a_committed_one_is_refused(ssh_keys, tmp_path):
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    config = with_keys(load_stack_config("dev"), ssh_keys)
    with pytest.raises(ConfigError) as caught:
        parse(config, "staging", tmp_path)
    assert any(
        p.startswith("kvm-kubeadm:network.subnet:") and "overlaps stack 'dev'" in p for p in caught.value.problems
    ), caught.value.problems


def test_each_stack_runs_every_command_against_its_own_nodes(runs):
    for stack, run in runs.items():
        (network,) = run.of_type(NETWORK)
        subnet = ipaddress.IPv4Network(network.inputs["addresses"][0])
        for command in run.of_type(COMMAND):
            assert ipaddress.IPv4Address(command.inputs["connection"]["host"]) in subnet, command.urn
