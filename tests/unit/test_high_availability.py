"""Three control planes behind a VIP, under mocks: the order of init, control-plane joins and worker
joins; the VIP as the one endpoint; the certificate key secret wherever it goes; the upgrade order;
the removal of a control plane; and the refusals, each naming its key."""

from __future__ import annotations

import pytest
import yaml

from components import kubeadm
from components.config import ConfigError, parse
from tests.conftest import with_keys
from tests.program import (
    COMMAND, DYNAMIC, FAKE_CA_HASH, FAKE_CERTIFICATE_KEY, FAKE_TOKEN, HIGHLY_AVAILABLE, PROJECT_DIR, is_secret,
    load_stack_config, run_program,
)
from tests.unit.test_pipeline import closure, stage_of

LEADER, SECOND, THIRD = "k8smaster", "k8smaster2", "k8smaster3"
JOINING = [SECOND, THIRD]
WORKERS = ["k8sworker1", "k8sworker2", "k8sworker3"]
VIP_ENDPOINT = "192.168.56.100:8443"


@pytest.fixture(scope="module")
def ha_config(ssh_keys) -> dict:
    """The dev stack with three control planes behind a VIP, and its three workers."""
    return {**with_keys(load_stack_config("dev"), ssh_keys), **HIGHLY_AVAILABLE}


@pytest.fixture(scope="module")
def ha(ha_config):
    run = run_program(ha_config)
    assert run.error is None, run.error
    return run


def depends(run, later, earlier) -> bool:
    return earlier.urn in closure(run, later)


def test_the_leader_inits_then_each_control_plane_joins_after_the_one_before_then_the_workers(ha):
    init = stage_of(ha, LEADER, "init")
    second_upload, second_join, second_member = (stage_of(ha, SECOND, s) for s in ("upload-certs", "join", "etcd-member"))
    third_upload, third_join = (stage_of(ha, THIRD, s) for s in ("upload-certs", "join"))
    assert depends(ha, second_upload, init) and depends(ha, second_join, second_upload)
    # The first joins once the leader's pod network is out: a real run's leader, still rolling it out, was
    # loaded to 16-18 while the second control plane joined.
    assert stage_of(ha, LEADER, "cni").urn in second_upload.dependencies
    assert second_member.urn in third_upload.dependencies and depends(ha, third_join, third_upload)
    assert not depends(ha, second_join, third_join)
    # Each joining control plane's VM boots in its turn too (README: Three control planes behind a VIP).
    second_vm, third_vm = (ha.by_name(f"k8s-{node}-node-domain") for node in JOINING)
    assert stage_of(ha, LEADER, "cni").urn in second_vm.dependencies and second_member.urn in third_vm.dependencies
    third_member = stage_of(ha, THIRD, "etcd-member")
    for worker in WORKERS:
        assert third_member.urn in stage_of(ha, worker, "join").dependencies, worker
    # Every control plane's load balancer runs before its init or join.
    for node, first in [(LEADER, "init"), (SECOND, "join"), (THIRD, "join")]:
        assert stage_of(ha, node, "load-balancer").urn in stage_of(ha, node, first).dependencies, node
    ready = ha.by_name("k8s-ready")
    assert {second_member.urn, third_member.urn} <= set(ready.dependencies)
    assert f"WAIT_FOR_NODES=({LEADER} {SECOND} {THIRD} {' '.join(WORKERS)})" in ready.inputs["create"]


def test_the_certs_are_uploaded_on_the_leader_just_before_each_join(ha):
    for node in JOINING:
        upload = stage_of(ha, node, "upload-certs")
        assert upload.inputs["connection"]["host"] == "192.168.56.107", node
        assert upload.inputs["stdin"] == f"{FAKE_CERTIFICATE_KEY}\n" and is_secret(upload.raw_inputs["stdin"]), node


def test_every_node_and_the_kubeconfig_use_the_vip(ha):
    (init,) = [d for d in yaml.safe_load_all(stage_of(ha, LEADER, "init").inputs["stdin"]) if d["kind"] == "ClusterConfiguration"]
    assert init["controlPlaneEndpoint"] == VIP_ENDPOINT
    for node in [*JOINING, *WORKERS]:
        (join,) = yaml.safe_load_all(stage_of(ha, node, "join").inputs["stdin"])
        assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == VIP_ENDPOINT, node
        assert stage_of(ha, node, "join").param("API_URL") == f"https://{VIP_ENDPOINT}", node
    value, _ = ha.resolve(ha.exports["joinCommand"])
    assert value.startswith(f"kubeadm join {VIP_ENDPOINT} ")


def test_a_joining_control_plane_joins_as_one_with_the_certificate_key(ha):
    for index, node in enumerate(JOINING, start=1):
        join = stage_of(ha, node, "join")
        (document,) = yaml.safe_load_all(join.inputs["stdin"])
        assert document["controlPlane"] == {
            "localAPIEndpoint": {"advertiseAddress": f"192.168.56.{107 + index}", "bindPort": 6443},
            "certificateKey": FAKE_CERTIFICATE_KEY,
        }
        # No workers would leave it tainted; the dev topology has three, so it is.
        assert "taints" not in document["nodeRegistration"]
        assert is_secret(join.raw_inputs["stdin"]) and "stdin" in join.ignore_changes
        # Its control plane gets the leader's bound to come up (a real run: kubeadm's 4 minutes were too
        # short), its new etcd member kubeadm's etcd bound (default 120 s) to catch up and be promoted.
        timeouts = document["timeouts"]
        assert (timeouts["controlPlaneComponentHealthCheck"], timeouts["etcdAPICall"]) == ("240s", "120s"), node
    (worker_join,) = yaml.safe_load_all(stage_of(ha, WORKERS[0], "join").inputs["stdin"])
    assert not {"controlPlaneComponentHealthCheck", "etcdAPICall"} & set(worker_join["timeouts"])


def node_ip(node: str) -> str:
    return f"192.168.56.{107 + [LEADER, *JOINING].index(node)}"


def test_a_control_plane_joins_by_its_own_script_whose_retry_first_takes_its_etcd_member_out(ha):
    for node in JOINING:
        join = stage_of(ha, node, "join")
        assert "readonly STAGE=join-control-plane" in join.inputs["create"], node
        assert join.param("ETCD_PEER_URL") == f"https://{node_ip(node)}:2380" and join.param("LEADER") == LEADER, node
    for worker in WORKERS:
        assert "readonly STAGE=join\n" in stage_of(ha, worker, "join").inputs["create"], worker


def test_the_certificate_key_is_secret_and_never_on_a_command_line(ha):
    (key,) = [r for r in ha.registrations if r.type == DYNAMIC and r.name.endswith("-certificate-key")]
    assert "key" in key.additional_secret_outputs
    assert ha.resolve(ha.namespace["cluster"].leader.ticket.certificate_key) == (FAKE_CERTIFICATE_KEY, True)
    for command in ha.stage_commands():
        for field in ("create", "update", "delete"):
            text = command.inputs.get(field) or ""
            assert FAKE_CERTIFICATE_KEY not in text and FAKE_TOKEN not in text and FAKE_CA_HASH not in text, command.urn


def test_each_control_plane_gets_its_own_keepalived_priority_and_the_others_as_peers(ha):
    for index, node in enumerate([LEADER, *JOINING]):
        config = stage_of(ha, node, "load-balancer").param("KEEPALIVED_CONFIG")
        assert f"priority {150 - index}" in config, node
        peers = {f"192.168.56.{107 + other}" for other in range(3) if other != index}
        assert {line.strip() for line in config.split("unicast_peer {")[1].split("}")[0].split()} == peers, node
        assert "192.168.56.100/24" in config
    haproxy = [line.split() for line in stage_of(ha, LEADER, "load-balancer").param("HAPROXY_CONFIG").splitlines()]
    servers = [words[1:3] + words[3:4] for words in haproxy if words[:1] == ["server"]]
    addresses = [(node, f"192.168.56.{107 + index}:6443") for index, node in enumerate([LEADER, *JOINING])]
    # Each API server health-checked, and each again unchecked, used only when none passes its check.
    assert servers == [[node, address, "check"] for node, address in addresses] + [
        [f"{node}-unchecked", address, "backup"] for node, address in addresses]
    assert ["option", "allbackups"] in haproxy and ["option", "redispatch"] in haproxy


def test_a_version_change_upgrades_the_leader_then_each_control_plane_then_the_workers(ha):
    leader_done = stage_of(ha, LEADER, "uncordon")
    second_kubeadm, second_done = stage_of(ha, SECOND, "upgrade-kubeadm"), stage_of(ha, SECOND, "uncordon")
    third_kubeadm, third_done = stage_of(ha, THIRD, "upgrade-kubeadm"), stage_of(ha, THIRD, "uncordon")
    assert leader_done.urn in second_kubeadm.dependencies
    assert second_done.urn in third_kubeadm.dependencies
    assert third_done.urn in stage_of(ha, WORKERS[0], "upgrade-kubeadm").dependencies
    # `upgrade node`, not `upgrade apply`, with the static pods' patches the join had.
    upgrade = stage_of(ha, SECOND, "upgrade-node")
    assert not upgrade.inputs.get("create") and "kubeadm upgrade node" in upgrade.inputs["update"]
    assert yaml.safe_load(upgrade.param("UPGRADE_CONFIG")).get("node") == {}  # the dev stack has no patches
    assert not [c for c in ha.commands("upgrade-apply") if not c.name.startswith(f"k8s-{LEADER}-")]


def test_a_control_plane_leaves_drained_without_its_etcd_member_and_node_then_reset(ha):
    leader_domain = ha.by_name(f"k8s-{LEADER}-node-domain")
    for node in JOINING:
        join, reset, membership = (stage_of(ha, node, stage) for stage in ("join", "reset", "membership"))
        # Pulumi deletes dependents first: membership (on the leader) -> reset -> join -> domain.
        assert reset.urn in membership.dependencies and join.urn in reset.dependencies
        assert "readonly STAGE=remove-control-plane" in membership.inputs["delete"]
        assert f"readonly TARGET_NODE={node}" in membership.inputs["delete"]
        assert f"readonly LEADER={LEADER}" in membership.inputs["delete"]
        assert f"readonly ETCD_PEER_URL=https://{node_ip(node)}:2380" in membership.inputs["delete"]
        assert membership.inputs["connection"]["host"] == "192.168.56.107"
        assert "readonly STAGE=reset" in reset.inputs["delete"]
        assert membership.deleted_with == leader_domain.urn and reset.deleted_with == leader_domain.urn


def test_the_version_record_lists_the_control_planes_and_the_endpoint(ha):
    (record,) = [r for r in ha.registrations if r.type == DYNAMIC and r.name.endswith("-kubernetes-version")]
    assert record.inputs["control_planes"] == JOINING and record.inputs["endpoint"] == VIP_ENDPOINT


def test_without_a_vip_nothing_of_it_is_registered(dev_config):
    run = run_program(dev_config)
    assert run.error is None, run.error
    (record,) = [r for r in run.registrations if r.type == DYNAMIC and r.name.endswith("-kubernetes-version")]
    assert "control_planes" not in record.inputs and "endpoint" not in record.inputs
    assert not [r for r in run.registrations if r.name.endswith("-certificate-key") or r.name.endswith("-load-balancer")]
    assert {c.inputs["connection"]["host"] for c in run.of_type(COMMAND)} == {
        "192.168.56.107", "192.168.56.123", "192.168.56.124", "192.168.56.125"}


def test_one_control_plane_with_a_vip_gets_the_load_balancer_and_the_endpoint(dev_config):
    run = run_program({**dev_config, "controlPlane": {**dev_config["controlPlane"], "vip": "192.168.56.100"}})
    assert run.error is None, run.error
    config = stage_of(run, LEADER, "load-balancer").param("KEEPALIVED_CONFIG")
    assert "unicast_peer" not in config
    (join,) = yaml.safe_load_all(stage_of(run, WORKERS[0], "join").inputs["stdin"])
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == VIP_ENDPOINT


def problems(config: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(config, "dev", PROJECT_DIR)
    return caught.value.problems


@pytest.mark.parametrize("control_plane, expected", [
    ({"count": 2, "vip": "192.168.56.100"}, ["kvm-kubeadm:controlPlane.count: 2 is even"]),
    ({"count": 3, "vip": None}, ["kvm-kubeadm:controlPlane.vip: required when kvm-kubeadm:controlPlane.count > 1"]),
    ({"count": 9, "vip": "192.168.56.100"}, ["kvm-kubeadm:controlPlane.count: must be between 1 and 7, got 9"]),
    ({"count": 3, "vip": "192.168.56.108"}, ["kvm-kubeadm:controlPlane.vip: 192.168.56.108 is k8smaster2's address"]),
    ({"count": 3, "vip": "192.168.56.1"}, ["kvm-kubeadm:controlPlane.vip: 192.168.56.1 is the gateway address"]),
    ({"count": 3, "vip": "192.168.57.100"}, ["kvm-kubeadm:controlPlane.vip: 192.168.57.100 is outside the node subnet"]),
    ({"count": 3, "vip": "192.168.56.255"}, ["kvm-kubeadm:controlPlane.vip: 192.168.56.255 is the network or broadcast"]),
    ({"count": 3, "ip": "192.168.56.253", "vip": "192.168.56.100"},
     ["kvm-kubeadm:controlPlane.count: 3 control planes from 192.168.56.253 do not fit"]),
    ({"count": 3, "ip": "192.168.56.122", "vip": "192.168.56.100"},
     ["kvm-kubeadm:workers.firstIp: 192.168.56.123 (k8sworker1) is already used by k8smaster2"]),
])
def test_a_bad_control_plane_config_is_refused_naming_its_key(ha_config, control_plane, expected):
    found = problems({**ha_config, "controlPlane": {**ha_config["controlPlane"], **control_plane}})
    for start in expected:
        assert [line for line in found if line.startswith(start)], found


def test_every_control_plane_problem_is_reported_at_once(ha_config):
    found = problems({**ha_config, "controlPlane": {**ha_config["controlPlane"], "count": 4, "vip": "192.168.56.1"},
                      "firewall": "open-ports"})
    assert [line.split(":")[1] for line in found] == ["controlPlane.count", "controlPlane.vip", "firewall"], found


def test_the_endpoint_is_the_vip_or_the_leaders_address(ha_config, dev_config):
    assert kubeadm.api_endpoint(parse(ha_config, "dev", PROJECT_DIR)) == VIP_ENDPOINT
    assert kubeadm.api_endpoint(parse(dev_config, "dev", PROJECT_DIR)) == "192.168.56.107:6443"
