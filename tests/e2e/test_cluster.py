"""A real cluster end to end (see tests/e2e/cluster.py for the setting): a first `pulumi up`
whose kubeadm init fails, a second that completes it without manual cleanup, then Ready nodes,
the pod network, DNS and Services, idempotence, a worker added and removed, a worker lost
behind Pulumi's back, and a clean destroy."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from tests.e2e.cluster import (
    CONTROL_PLANE, FIRST_WORKER, GATEWAY, REGISTRY, SECOND_WORKER, busybox_image, cluster_on_kit, skip_unless_opted_in,
)
from tests.e2e.stack import STACK, reporter

pytestmark = pytest.mark.e2e
skip_unless_opted_in("tests/e2e/test_cluster.py", "it took 35 to 50 minutes")

# What follows the node list: DNS entries, the cluster ready check and the version record.
CLUSTER_WIDE = {"k8s-network-net", "k8s-ready", "k8s-kubernetes-version"}


@pytest.fixture(scope="module")
def cluster(ssh_keys, tmp_path_factory, request):
    with cluster_on_kit(ssh_keys, tmp_path_factory.mktemp("cluster"), reporter(request, "cluster")) as running:
        # The fault: a first up whose kubeadm init cannot pull its images.
        broken = {**running.served["mirrors"], "imageRepository": f"{REGISTRY}/no-such-path"}
        running.set_config({**running.config, **running.served, "mirrors": broken})
        running.first_up = running.up(check=False)
        running.report_up("first up (init fails)", running.first_up)
        running.set_config({**running.config, **running.served})
        running.second_up = running.up(check=False)
        running.report_up("second up (to every node Ready)", running.second_up)
        assert running.second_up.returncode == 0, running.second_up.diagnostics()[-8000:]
        running.report_control_plane_start()
        yield running


def test_a_failed_init_shows_kubeadms_log_and_the_next_up_completes_it(cluster):
    failed = cluster.first_up.diagnostics()
    assert cluster.first_up.returncode != 0, failed[-4000:]
    assert f"'kubeadm init' failed on {CONTROL_PLANE}; last lines of /var/log/kvm-kubeadm/init.log" in failed, failed[-8000:]
    assert f"{REGISTRY}/no-such-path/kube-apiserver" in failed, failed[-8000:]
    # The second up found the unfinished attempt and reset it: no manual cleanup.
    assert "an earlier kubeadm init did not finish; resetting for a clean retry" in cluster.second_up.diagnostics()


def test_every_node_is_ready_with_its_name_ip_and_kubelet_version(cluster):
    expected = {node.name: str(node.ip) for node in cluster.settings.nodes}
    nodes = cluster.nodes()
    assert set(nodes) == set(expected) == {CONTROL_PLANE, FIRST_WORKER}
    for name, node in nodes.items():
        status = node["status"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True", name
        assert {a["type"]: a["address"] for a in status["addresses"]}["InternalIP"] == expected[name], name
        assert status["nodeInfo"]["kubeletVersion"] == f"v{cluster.settings.kubernetes.version}", name
        assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2."), name
    cluster.wait_for_readyz()


def test_the_control_plane_coredns_kube_proxy_and_flannel_run(cluster):
    pods = cluster.json("get", "pods", "--all-namespaces")["items"]
    running = [(p["metadata"]["namespace"], p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods
               if p["status"]["phase"] == "Running"]
    for component in ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"):
        assert ("kube-system", f"{component}-{CONTROL_PLANE}", CONTROL_PLANE) in running, component
    assert len([p for p in running if p[1].startswith("coredns-")]) == 2, running
    for prefix, namespace in (("kube-proxy-", "kube-system"), ("kube-flannel-ds-", "kube-flannel")):
        on = {node for ns, name, node in running if ns == namespace and name.startswith(prefix)}
        assert on == {CONTROL_PLANE, FIRST_WORKER}, (prefix, running)


def test_pod_and_service_cidrs_are_the_tutorials(cluster):
    kubeadm_config = cluster.json("get", "configmap", "kubeadm-config", "-n", "kube-system")
    networking = yaml.safe_load(kubeadm_config["data"]["ClusterConfiguration"])["networking"]
    assert (networking["podSubnet"], networking["serviceSubnet"]) == ("10.244.0.0/16", "10.96.0.0/12")
    assert cluster.json("get", "service", "kubernetes")["spec"]["clusterIP"] == "10.96.0.1"
    for name, node in cluster.nodes().items():
        assert re.fullmatch(r"10\.244\.\d+\.0/24", node["spec"]["podCIDR"]), (name, node["spec"])


def workload(image: str) -> str:
    """An HTTP server pod on the control plane, its ClusterIP Service, and a client pod on the worker."""
    busybox = "/bin/busybox"
    serve = f"{busybox} mkdir -p /www && echo kvm-kubeadm > /www/index.html && exec {busybox} httpd -f -p 8080 -h /www"

    def pod(name: str, node: str, command: list[str], labels: dict) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 1,
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
            "containers": [{"name": name, "image": image, "command": command}]}}

    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "e2e-echo"},
               "spec": {"selector": {"app": "e2e-echo"}, "ports": [{"port": 8080}]}}
    return yaml.safe_dump_all([
        pod("e2e-echo", CONTROL_PLANE, [busybox, "sh", "-c", serve], {"app": "e2e-echo"}),
        pod("e2e-client", FIRST_WORKER, [busybox, "sleep", "3600"], {}),
        service,
    ])


def test_a_worker_pod_resolves_dns_and_reaches_another_nodes_pod_and_a_service(cluster):
    cluster.kubectl("apply", "-f", "-", stdin=workload(busybox_image()))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/e2e-echo", "pod/e2e-client", "--timeout=600s", timeout=660)
    server_ip = cluster.json("get", "pod", "e2e-echo")["status"]["podIP"]
    service_ip = cluster.json("get", "service", "e2e-echo")["spec"]["clusterIP"]

    def in_client(*command: str, stdin: str | None = None) -> str:
        return cluster.kubectl("exec", "-i", "e2e-client", "--", "/bin/busybox", *command, stdin=stdin)

    assert "10.96.0.1" in in_client("nslookup", "kubernetes.default.svc.cluster.local")
    # nc, not wget: the static busybox's wget crashes (SIGSEGV) in the pod.
    for host in (server_ip, service_ip, "e2e-echo.default.svc.cluster.local"):
        response = in_client("nc", "-w", "20", host, "8080", stdin="GET / HTTP/1.0\r\n\r\n")
        assert response.splitlines()[0].endswith("200 OK") and response.strip().endswith("kvm-kubeadm"), (host, response)
    cluster.kubectl("delete", "-f", "-", "--wait=false", stdin=workload("unused"))


def test_containerd_and_the_kube_packages_are_as_configured(cluster):
    version = cluster.settings.kubernetes.version
    probe = (
        "containerd --version; apt-cache policy containerd.io kubelet; apt-mark showhold; "
        "dpkg-query -W -f '${Version}\\n' kubelet kubeadm kubectl; sudo containerd config dump; "
        f"sudo test -f /etc/containerd/certs.d/{REGISTRY}/hosts.toml && echo certs.d ok"
    )
    for node in cluster.settings.nodes:
        output = cluster.ssh(str(node.ip), probe).stdout
        assert re.search(r"^containerd \S+ v?2\.", output, re.M), (node.name, output)
        assert f"http://{GATEWAY}:8080/docker" in output and f"http://{GATEWAY}:8080/kubernetes" in output, output
        assert {"containerd.io", "kubeadm", "kubectl", "kubelet"} <= set(output.split()), (node.name, output)
        installed = re.findall(r"^\d+\.\d+\.\d+-\S+$", output, re.M)  # kubelet, kubeadm, kubectl
        assert len(installed) == 3 and all(line.startswith(f"{version}-") for line in installed), (node.name, output)
        assert "SystemdCgroup = true" in output, (node.name, output)
        assert re.search(rf"sandbox\w* = '?\"?{re.escape(REGISTRY)}/pause:", output), (node.name, output)
        assert "certs.d ok" in output, node.name


def test_a_second_up_changes_nothing(cluster):
    cluster.pulumi("preview", "--expect-no-changes")
    up = cluster.up("--expect-no-changes")
    cluster.report(f"an up with nothing changed: {up.seconds:.0f} s")


def test_a_worker_is_added_with_the_recorded_token_then_drained_reset_and_removed(cluster):
    cluster.set_workers(2)
    planned = cluster.planned_steps()
    cluster.report(f"adding {SECOND_WORKER}: {dict(planned)}")
    others = {name for _, name in planned if not name.startswith(f"k8s-{SECOND_WORKER}")}
    # The token, the CA hash and the other nodes stay; only the cluster-wide pieces follow.
    assert others <= CLUSTER_WIDE, planned
    assert all(op == "create" for op, name in planned if name.startswith(f"k8s-{SECOND_WORKER}")), planned
    cluster.report_up(f"adding {SECOND_WORKER}", cluster.up())
    cluster.wait_for_node(SECOND_WORKER, "True", seconds=60)

    cluster.set_workers(1)
    planned = cluster.planned_steps()
    others = {name for _, name in planned if not name.startswith(f"k8s-{SECOND_WORKER}")}
    assert others <= CLUSTER_WIDE, planned
    up = cluster.up()
    cluster.report_up(f"removing {SECOND_WORKER}", up)
    assert "kubeadm reset done" in up.diagnostics() and "does not answer over SSH" not in up.diagnostics()
    assert f"node {SECOND_WORKER} drained and deleted" in up.diagnostics()
    assert SECOND_WORKER not in cluster.nodes()
    left = cluster.namespace.snapshot()
    assert f"{STACK}-{SECOND_WORKER}" not in left.domains
    assert not [volume for _, volume in left.volumes if SECOND_WORKER in volume], left.volumes
    assert set(cluster.nodes()) == {CONTROL_PLANE, FIRST_WORKER}


def test_a_worker_lost_behind_pulumis_back_is_removed_by_the_next_up(cluster):
    domain = f"{STACK}-{FIRST_WORKER}"
    cluster.namespace.virsh("destroy", domain)
    cluster.namespace.virsh("undefine", domain)
    # The user notices the VM is gone once its node is NotReady.
    cluster.wait_for_node(FIRST_WORKER, "Unknown")
    cluster.set_workers(0)
    up = cluster.up()
    cluster.report_up(f"removing the lost {FIRST_WORKER}", up)
    assert f"warning: {FIRST_WORKER} (" in up.diagnostics() and "does not answer over SSH; skipped" in up.diagnostics()
    assert set(cluster.nodes()) == {CONTROL_PLANE}
    left = cluster.namespace.snapshot()
    assert not [volume for _, volume in left.volumes if FIRST_WORKER in volume], left.volumes
    cluster.pulumi("preview", "--expect-no-changes")


def test_no_secret_in_the_state_or_any_output(cluster):
    join = cluster.project.pulumi("stack", "output", "joinCommand", "--show-secrets").stdout
    token = re.search(r"--token (\S+)", join).group(1)
    ca_hash = re.search(r"sha256:([0-9a-f]{64})", join).group(1)
    client_key = yaml.safe_load(cluster.kubeconfig())["users"][0]["user"]["client-key-data"]
    secrets = {"token": token, "CA hash": ca_hash, "client key": client_key,
               "client key (decoded)": base64.b64decode(client_key).decode().splitlines()[1]}
    seen = {
        "state export": json.dumps(cluster.project.export_state()),
        "pulumi output and engine events": "\n".join(cluster.outputs),
    }
    leaks = [(what, where) for what, secret in secrets.items() for where, text in seen.items() if secret in text]
    assert leaks == []


def test_destroy_leaves_no_domain_volume_network_or_process(cluster):
    cluster.destroy_leaves_nothing()
