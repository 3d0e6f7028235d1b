"""The bootstrap pipeline under mocks: stage order, token/CA-hash flow, secrets."""

from __future__ import annotations

import subprocess

import pytest

from components import procedure
from tests.conftest import with_keys
from tests.program import (
    COMMAND, DOMAIN, DYNAMIC, FAKE_CA_HASH, FAKE_TOKEN, LOCAL_COMMAND, is_secret, load_stack_config, run_program,
)

WORKERS = ["k8sworker1", "k8sworker2", "k8sworker3"]
TOKEN = "k8s-k8smaster-bootstrap-token"


@pytest.fixture(scope="module")
def dev(ssh_keys):
    """The dev stack with every addon on, so that every declared stage is there."""
    run = run_program({**with_keys(load_stack_config("dev"), ssh_keys), "addons": {"headlamp": True}})
    assert run.error is None, run.error
    return run


def stage_of(run, node: str, stage: str):
    return run.by_name(f"k8s-{node}-{stage}")


def closure(run, start) -> set[str]:
    """Every URN that `start` depends on, directly or through other resources."""
    by_urn = {r.urn: r for r in run.registrations}
    seen, todo = set(), list(start.all_dependencies)
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        if urn in by_urn:
            todo.extend(by_urn[urn].all_dependencies | {by_urn[urn].parent} - {""})
    return seen


def declared_commands() -> set[str]:
    """Resource names of every stage the procedure declares for the dev topology (no VIP, so no load balancer;
    no snapshot to restore from)."""
    unwanted = (procedure.LOAD_BALANCER.name, "restore")
    names = {f"k8s-k8smaster-{stage.name}" for stage in procedure.CONTROL_PLANE if stage.name not in unwanted}
    names |= {f"k8s-{worker}-{stage.name}" for worker in WORKERS for stage in procedure.WORKER}
    return names | {f"k8s-{stage.name}" for stage in procedure.CLUSTER}


def test_each_declared_stage_is_one_command(dev):
    assert {command.name for command in dev.stage_commands()} == declared_commands()
    assert len(dev.stage_commands()) == len(declared_commands())


@pytest.mark.parametrize("node, last", [("k8smaster", "init")] + [(w, "join") for w in WORKERS])
def test_each_node_chain_is_os_prep_then_packages_then_init_or_join(dev, node, last):
    domain = dev.by_name(f"k8s-{node}-node-domain")
    os_prep, packages, final = (stage_of(dev, node, s) for s in ("os-prep", "packages", last))
    assert domain.urn in os_prep.dependencies, os_prep.urn
    assert os_prep.urn in packages.dependencies, packages.urn
    assert packages.urn in final.dependencies, final.urn


@pytest.mark.parametrize("worker", WORKERS)
def test_join_inputs_depend_on_token_and_ca_hash_outputs(dev, worker):
    join = stage_of(dev, worker, "join")
    token = dev.by_name(TOKEN)
    ca_hash = stage_of(dev, "k8smaster", "ca-hash")
    assert token.urn in join.property_dependencies["stdin"], join.urn
    assert ca_hash.urn in join.property_dependencies["stdin"], join.urn
    for prerequisite in ("init", "token", "ca-hash"):
        assert stage_of(dev, "k8smaster", prerequisite).urn in join.dependencies, f"{join.urn} misses {prerequisite}"


def test_join_config_carries_token_and_ca_hash_for_that_worker(dev):
    import yaml

    joins = dev.commands("join")
    assert len(joins) == 3
    for join in joins:
        (document,) = yaml.safe_load_all(join.inputs["stdin"])
        discovery = document["discovery"]["bootstrapToken"]
        assert discovery == {"apiServerEndpoint": "192.168.56.107:6443", "token": FAKE_TOKEN, "caCertHashes": [FAKE_CA_HASH]}
        assert join.name == f"k8s-{document['nodeRegistration']['name']}-join"


def test_no_join_depends_on_another_join(dev):
    joins = dev.commands("join")
    join_urns = {j.urn for j in joins}
    assert len(joins) == 3
    for join in joins:
        assert not (closure(dev, join) & (join_urns - {join.urn})), join.urn


def test_ready_check_waits_for_flannel_and_every_join(dev):
    ready = dev.by_name("k8s-ready")
    assert stage_of(dev, "k8smaster", "cni").urn in ready.dependencies
    for worker in WORKERS:
        assert stage_of(dev, worker, "join").urn in ready.dependencies, worker
    assert "readonly -a WAIT_FOR_NODES=(k8smaster k8sworker1 k8sworker2 k8sworker3)" in ready.inputs["create"]


def test_control_plane_stages_after_init_wait_for_it(dev):
    init = stage_of(dev, "k8smaster", "init")
    for stage in ("ca-hash", "token", "cni"):
        assert init.urn in stage_of(dev, "k8smaster", stage).dependencies, stage


@pytest.mark.parametrize("export", ["kubeconfig", "joinCommand"])
def test_sensitive_exports_are_secret(dev, export):
    value, secret = dev.resolve(dev.exports[export])
    assert secret, f"export {export} is not secret"
    assert value


def test_token_and_ca_hash_outputs_are_secret(dev):
    control_plane = dev.namespace["cluster"].leader
    assert dev.resolve(control_plane.token) == (FAKE_TOKEN, True)
    assert dev.resolve(control_plane.ca_hash) == (FAKE_CA_HASH, True)


def test_join_command_is_the_procedures_line(dev):
    value, _ = dev.resolve(dev.exports["joinCommand"])
    assert value == f"kubeadm join 192.168.56.107:6443 --token {FAKE_TOKEN} --discovery-token-ca-cert-hash {FAKE_CA_HASH}"


@pytest.mark.parametrize("stage", ["ca-hash", "kubeconfig"])
def test_commands_printing_secrets_mark_stdout_secret_and_do_not_log(dev, stage):
    (command,) = dev.commands(stage)
    assert {"stdout", "stderr"} <= set(command.additional_secret_outputs), command.urn
    assert command.inputs["logging"] == "none", command.urn


@pytest.mark.parametrize("stage, count", [("init", 1), ("token", 1), ("join", 3)])
def test_secrets_travel_on_secret_stdin(dev, stage, count):
    commands = dev.commands(stage)
    assert len(commands) == count
    for command in commands:
        assert is_secret(command.raw_inputs["stdin"]), command.urn
        assert FAKE_TOKEN in command.inputs["stdin"], command.urn


def test_no_secret_appears_in_any_command_line(dev):
    commands = dev.stage_commands()
    assert len(commands) == len(declared_commands())
    for command in commands:
        for field in ("create", "delete"):
            text = command.inputs.get(field) or ""
            assert FAKE_TOKEN not in text and FAKE_CA_HASH not in text, f"{command.urn} {field}"


def test_token_resource_marks_its_token_secret(dev):
    token = dev.by_name(TOKEN)
    assert token.type == DYNAMIC and "token" in token.additional_secret_outputs


def test_a_refreshed_token_does_not_touch_joined_workers_or_init(dev):
    for command in dev.commands("join") + dev.commands("init"):
        assert "stdin" in command.ignore_changes, command.urn
    # The token registration must follow a new token.
    (registration,) = dev.commands("token")
    assert "stdin" not in registration.ignore_changes


def test_worker_removal_drains_on_the_control_plane_then_resets_then_deletes_the_vm(dev):
    control_plane_domain = dev.by_name("k8s-k8smaster-node-domain")
    for worker in WORKERS:
        join, reset, membership = (stage_of(dev, worker, stage) for stage in ("join", "reset", "membership"))
        domain = dev.by_name(f"k8s-{worker}-node-domain")
        # Pulumi deletes dependents first: membership (drain) -> reset -> join -> domain.
        assert reset.urn in membership.dependencies and join.urn in reset.dependencies
        assert domain.urn in closure(dev, join)
        assert "readonly STAGE=remove-node" in membership.inputs["delete"]
        assert f"readonly TARGET_NODE={worker}" in membership.inputs["delete"]
        assert "readonly STAGE=reset" in reset.inputs["delete"]
        assert not join.inputs.get("delete") and not reset.inputs.get("create")
        assert "kubectl drain" not in (membership.inputs.get("create") or "")
        # Membership runs on the control plane.
        assert membership.inputs["connection"]["host"] == "192.168.56.107"
        # On a full destroy, the whole cluster goes: skip drain and reset.
        assert membership.deleted_with == control_plane_domain.urn and reset.deleted_with == control_plane_domain.urn


def test_the_reset_of_a_worker_whose_vm_is_gone_is_skipped_with_a_warning(dev, ssh_keys, tmp_path):
    """The reset runs over ssh from the Pulumi host; an address that does not answer is skipped."""
    reset = stage_of(dev, "k8sworker2", "reset")
    assert reset.type == LOCAL_COMMAND
    command = reset.inputs["delete"]
    assert f"-i {ssh_keys[0]}" in command and "kube@192.168.56.124" in command
    # Run it for real against an address nothing answers on: a fresh network namespace has no route.
    unreachable = command.replace("192.168.56.124", "192.0.2.1")
    result = subprocess.run(["unshare", "-rn", "sh", "-c", unreachable], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "warning: k8sworker2 (192.0.2.1) does not answer over SSH; skipped" in result.stderr


def test_stages_connect_over_ssh_with_secret_key_and_bounded_retries(dev):
    for command in dev.of_type(COMMAND):
        raw = command.raw_inputs["connection"]
        connection = raw["value"] if is_secret(raw) else raw
        # The key is secret on its own, or the whole connection that holds it is.
        assert is_secret(raw) or is_secret(connection["privateKey"]), command.urn
        assert 0 < connection["dialErrorLimit"] <= 100, command.urn
        assert connection["user"] == "kube", command.urn


def test_domain_is_not_a_dependency_of_any_connection_host(dev):
    # Connections use the configured fixed address, known at preview time.
    hosts = {c.inputs["connection"]["host"] for c in dev.of_type(COMMAND)}
    assert hosts == {"192.168.56.107", "192.168.56.123", "192.168.56.124", "192.168.56.125"}
    assert len(dev.of_type(DOMAIN)) == 4
