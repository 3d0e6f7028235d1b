"""The highly available control plane end to end: the `ha` stack (three schedulable control planes behind
a VIP, no workers, cloned from a prepared image) on the mirror kit. The leader comes up alone behind the
VIP first, and a second `up` grows the cluster to three: two control-plane joins one at a time to three
Ready nodes and a three-member etcd; the API through the VIP while the VIP's holder is shut off
(`virsh destroy`), counted by a bounded client loop; the lost control plane back; idempotence, no secret
anywhere, and a clean destroy (setting: tests/e2e/cluster.py).

The leader boots alone because three emulated guests booting at once on two cores starved one guest's
timer (run 4), and a cluster that grows from one control plane is a path of its own worth proving
(README: The endpoint from day one); each joining control plane's VM boots in its turn (run 7). Three 2-vCPU guests under software emulation never finished the
second control plane's join here (README: Three control planes behind a VIP); the module is kept for
hosts that can carry it, and runs only when KVMK_CLUSTER_E2E=1 is set.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.e2e.cluster import client_loop, cluster_on_kit, skip_unless_opted_in
from tests.e2e.stack import STACK, reporter

pytestmark = pytest.mark.e2e
skip_unless_opted_in("tests/e2e/test_high_availability.py", "three control planes did not finish joining in 40 minutes")

# The dashboard's image is not in a kit built here, and the other addons are the learning cluster's
# to prove: off, so that the run is about the control plane.
WITHOUT_ADDONS = {"metricsServer": False, "localPath": False, "headlamp": False}
# How long the client loop asks after the VIP's holder is gone, and how long the VIP may take to move.
AFTER_THE_LOSS_SECONDS = 240
FAILOVER_BOUND_SECONDS = 90


@pytest.fixture(scope="module")
def cluster(ssh_keys, tmp_path_factory, request):
    with cluster_on_kit(ssh_keys, tmp_path_factory.mktemp("ha"), reporter(request, "ha"), stack="ha", workers=0,
                        addons=WITHOUT_ADDONS) as running:
        three = running.config["controlPlane"]
        running.config = {**running.config, "controlPlane": {**three, "count": 1}}
        running.up_on_the_kit("up (the leader alone behind the VIP)", "ha-leader-up")
        running.leader_alone = {"readyz": running.kubectl("get", "--raw=/readyz").strip(),
                                "holders": vip_holders(running)}
        running.set_config({**running.config, "controlPlane": three})
        running.growth = running.up(check=False)
        running.report_up("up (two control planes join, one at a time)", running.growth)
        running.keep_for_the_critical_path(running.growth, "ha-growth-up")
        yield running


def control_planes(cluster) -> list[str]:
    return [node.name for node in cluster.settings.control_planes]


def vip_holders(cluster) -> list[str]:
    vip = str(cluster.settings.vip)
    return [node.name for node in cluster.settings.control_planes
            if f" {vip}/" in cluster.ssh(str(node.ip), "ip -o -4 addr show", check=False).stdout]


def etcd_members(cluster) -> list[list[str]]:
    listed = cluster.kubectl(
        "-n", "kube-system", "exec", f"etcd-{cluster.settings.control_plane.name}", "--", "etcdctl",
        "--endpoints=https://127.0.0.1:2379", "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
        "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt", "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
        "member", "list")
    return [line.split(", ") for line in listed.strip().splitlines()]


def test_the_leader_alone_answered_through_the_vip_that_it_held(cluster):
    assert cluster.leader_alone == {"readyz": "ok", "holders": [cluster.settings.control_plane.name]}


def test_three_control_planes_joined_one_at_a_time_are_ready_and_schedulable(cluster):
    assert cluster.growth.returncode == 0, cluster.growth.diagnostics()[-8000:]
    nodes = cluster.nodes()
    assert sorted(nodes) == sorted(control_planes(cluster))
    for name, node in nodes.items():
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True", name
        assert "node-role.kubernetes.io/control-plane" in node["metadata"]["labels"], name
        assert not [t for t in node["spec"].get("taints", []) if t["key"] == "node-role.kubernetes.io/control-plane"]
    # Each join began after the one before had a healthy etcd member.
    steps = cluster.growth.durations()
    cluster.report("joins: " + ", ".join(f"{name} {steps[f'k8s-{name}-join']} s" for name in control_planes(cluster)[1:]))
    diagnostics = cluster.growth.diagnostics()
    order = [diagnostics.index(f"[etcd-member {name}] etcd member healthy") for name in control_planes(cluster)[1:]]
    joins = [diagnostics.index(f"[join-control-plane {name}] kubeadm join done") for name in control_planes(cluster)[1:]]
    assert joins[0] < order[0] < joins[1] < order[1], (joins, order)


def test_etcd_has_three_started_members(cluster):
    members = etcd_members(cluster)
    assert sorted(member[2] for member in members) == sorted(control_planes(cluster)), members
    assert all(member[1] == "started" and member[5] == "false" for member in members), members


def test_clients_use_the_vip(cluster):
    endpoint = f"https://{cluster.settings.vip}:8443"
    assert f"server: {endpoint}" in cluster.kubeconfig()
    assert cluster.kubectl("get", "--raw=/readyz").strip() == "ok"
    (holder,) = vip_holders(cluster)
    cluster.report(f"the VIP {cluster.settings.vip} is on {holder}")
    config = cluster.kubectl("-n", "kube-system", "get", "configmap", "kubeadm-config", "-o", "json")
    assert f"controlPlaneEndpoint: {cluster.settings.vip}:8443" in json.loads(config)["data"]["ClusterConfiguration"]


def test_a_second_up_changes_nothing(cluster):
    cluster.pulumi("preview", "--expect-no-changes")


def test_the_api_answers_through_the_vip_while_its_holder_is_shut_off(cluster):
    (holder,) = vip_holders(cluster)
    with client_loop(cluster.namespace, f"https://{cluster.settings.vip}:8443/readyz") as answers:
        time.sleep(20)
        lost = time.monotonic()
        cluster.namespace.virsh("destroy", f"{STACK}-{holder}")
        time.sleep(AFTER_THE_LOSS_SECONDS)
    after = [(t - lost, ok) for t, ok in answers if t >= lost]
    failed = [t for t, ok in after if not ok]
    resumed = max(failed, default=0.0)
    cluster.report(f"client loop: {sum(ok for _, ok in answers)} of {len(answers)} answered; after {holder} was shut "
                   f"off: {len(after) - len(failed)} of {len(after)}, the last failure {resumed:.0f} s after the loss")
    assert all(ok for t, ok in answers if t < lost)
    assert resumed <= FAILOVER_BOUND_SECONDS, after
    assert len(after) - len(failed) >= len(after) // 2, after
    (new_holder,) = vip_holders(cluster)
    assert new_holder != holder
    cluster.report(f"the VIP moved to {new_holder}")
    cluster.holder_lost = holder


def test_the_lost_control_plane_comes_back(cluster):
    holder = cluster.holder_lost
    cluster.namespace.virsh("start", f"{STACK}-{holder}")
    start = time.monotonic()
    cluster.wait_for_node(holder, "True", seconds=1200)
    cluster.report(f"{holder} Ready again {time.monotonic() - start:.0f} s after its start")
    assert all(member[1] == "started" for member in etcd_members(cluster))


def test_no_secret_in_the_state_or_any_output(cluster):
    leader = str(cluster.settings.control_plane.ip)
    upload = cluster.ssh(leader, "sudo cat /etc/kubernetes/kubeadm-upload-certs.yaml").stdout
    certificate_key = re.search(r"certificateKey: ([0-9a-f]{64})", upload).group(1)
    join = cluster.project.pulumi("stack", "output", "joinCommand", "--show-secrets").stdout
    secrets = {"certificate key": certificate_key, "token": re.search(r"--token (\S+)", join).group(1),
               "CA hash": re.search(r"sha256:([0-9a-f]{64})", join).group(1)}
    seen = {"state export": json.dumps(cluster.project.export_state()),
            "pulumi output and engine events": "\n".join(cluster.outputs)}
    assert [(what, where) for what, secret in secrets.items() for where, text in seen.items() if secret in text] == []


def test_destroy_leaves_no_domain_volume_network_or_process(cluster):
    cluster.destroy_leaves_nothing()
