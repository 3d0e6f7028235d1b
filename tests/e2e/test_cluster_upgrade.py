"""A patch upgrade of a real cluster (see tests/e2e/cluster.py for the setting): the cluster is
installed at the older patch release the kit serves (MIRROR_KUBE_UPGRADE_FROM, 1.36.2), then
`kubernetes.version` moves to the kit's (and the program's) default, MIRROR_KUBE_VERSION
(1.36.3): the plan in the preview, one `up` that upgrades the control plane and then the worker
while a workload keeps answering, and a second `up` with nothing to do."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest
import yaml

from tests.e2e.cluster import (
    CONTROL_PLANE, FIRST_WORKER, REGISTRY, RunningCluster, busybox_image, cluster_on_kit, skip_unless_opted_in,
)
from tests.e2e.stack import reporter
from tests.mirror import KUBE_VERSIONS

pytestmark = pytest.mark.e2e
skip_unless_opted_in("tests/e2e/test_cluster_upgrade.py", "it needs a cluster of its own, about 25 minutes before the upgrade")

OLD_VERSION = (KUBE_VERSIONS[1:] or [""])[0].removeprefix("v")
NEW_VERSION = KUBE_VERSIONS[0].removeprefix("v")
# Each node's upgrade steps, in the order procedure.py runs them.
UPGRADE_STEPS = {CONTROL_PLANE: ("upgrade-kubeadm", "upgrade-apply", "drain", "upgrade-kubelet", "uncordon"),
                 FIRST_WORKER: ("upgrade-kubeadm", "upgrade-node", "drain", "upgrade-kubelet", "uncordon")}
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The workload that must keep answering through the upgrade, on a fixed NodePort of the control plane.
WORKLOAD, NODE_PORT = "e2e-upgrade", 30080


@pytest.fixture(scope="module")
def cluster(ssh_keys, tmp_path_factory, request):
    assert OLD_VERSION, "tools/versions.env names no MIRROR_KUBE_UPGRADE_FROM: the upgrade has no version to start from"
    with cluster_on_kit(ssh_keys, tmp_path_factory.mktemp("upgrade"), reporter(request, "upgrade"),
                        version=OLD_VERSION) as running:
        running.set_config({**running.config, **running.served})
        running.report_up(f"up at {OLD_VERSION} (to every node Ready)", running.up())
        yield running


def test_the_cluster_runs_the_older_release(cluster):
    assert cluster.settings.kubernetes.version == OLD_VERSION
    for name, node in cluster.nodes().items():
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{OLD_VERSION}", name


def upgrade_workload(image: str) -> str:
    """Two HTTP servers that tolerate the control plane's taint and spread over the nodes, a budget that
    lets a drain evict only one at a time, and a NodePort Service. A server keeps answering for half a
    minute after it is told to stop, so that kube-proxy drops it before it goes: under emulation an
    endpoint change takes many seconds to reach every node's rules."""
    busybox = "/bin/busybox"
    serve = f"{busybox} mkdir -p /www && echo kvm-kubeadm > /www/index.html && exec {busybox} httpd -f -p 8080 -h /www"
    labels = {"app": WORKLOAD}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": WORKLOAD}, "spec": {
        "replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "terminationGracePeriodSeconds": 60,
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": labels}}],
            "containers": [{
                "name": "http", "image": image, "command": [busybox, "sh", "-c", serve],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                "lifecycle": {"preStop": {"exec": {"command": [busybox, "sleep", "30"]}}},
            }]}}}}
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": WORKLOAD},
              "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": WORKLOAD}, "spec": {
        "type": "NodePort", "selector": labels, "ports": [{"port": 8080, "nodePort": NODE_PORT}]}}
    return yaml.safe_dump_all([deployment, budget, service])


@dataclass
class Poller:
    """GETs `url` from the host every few seconds in a thread, until stopped; keeps each failure."""

    cluster: RunningCluster
    url: str
    polls: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.wait(3):
            self.polls += 1
            try:
                result = self.cluster.namespace.run(["curl", "-sS", "--max-time", "20", self.url], check=False, timeout=60)
            except subprocess.TimeoutExpired:
                self.failures.append(f"{time.monotonic() - start:.0f} s: curl did not return within 60 s")
                continue
            if result.returncode != 0 or result.stdout.strip() != "kvm-kubeadm":
                self.failures.append(f"{time.monotonic() - start:.0f} s: {result.returncode} {result.stdout}{result.stderr}")

    def __enter__(self) -> "Poller":
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def workload_pods(cluster: RunningCluster) -> dict[str, str]:
    """The upgrade workload's pods that are not on their way out, by name, with the node each is on."""
    pods = cluster.json("get", "pods", "-l", f"app={WORKLOAD}")["items"]
    return {pod["metadata"]["name"]: pod["spec"].get("nodeName", "") for pod in pods
            if not pod["metadata"].get("deletionTimestamp")}


def test_a_patch_upgrade_goes_node_by_node_while_a_workload_keeps_answering(cluster):
    """The cluster runs the older release; kubernetes.version set to the newer one is planned in the preview,
    then one up upgrades the control plane and the worker in turn (kubeadm upgrade apply and node, drain,
    kubelet, uncordon) while a Deployment behind a NodePort answers every request; a second up changes nothing."""
    cluster.kubectl("apply", "-f", "-", stdin=upgrade_workload(busybox_image()))
    cluster.kubectl("rollout", "status", f"deployment/{WORKLOAD}", "--timeout=600s", timeout=660)
    url = f"http://{cluster.settings.control_plane.ip}:{NODE_PORT}/"
    assert cluster.namespace.run(["curl", "-sS", "--max-time", "20", url], timeout=60).stdout.strip() == "kvm-kubeadm"
    before = workload_pods(cluster)

    cluster.set_config({**cluster.config, "kubernetes": {**cluster.config["kubernetes"], "version": NEW_VERSION}})
    # The version record's plan, as `pulumi preview --diff` shows it: the control plane first, then the worker.
    preview = cluster.pulumi("preview", "--diff").stdout
    for line in (f"{CONTROL_PLANE} (control plane, first): kubeadm {NEW_VERSION}, upgrade plan and apply",
                 f"{FIRST_WORKER} (after {CONTROL_PLANE}): kubeadm {NEW_VERSION}, upgrade node"):
        assert line in preview, preview[-6000:]
    planned = cluster.planned_steps()
    cluster.report(f"upgrade to {NEW_VERSION}: {dict(planned)}")
    # No VM, volume or node comes or goes: the stages run again where their inputs changed.
    assert not {op for op, _ in planned} & {"create", "delete"}, planned
    changed = {name for _, name in planned}
    assert "k8s-kubernetes-version" in changed, planned
    for node, steps in UPGRADE_STEPS.items():
        assert {f"k8s-{node}-{step}" for step in steps} <= changed, (node, planned)

    with Poller(cluster, url) as poller:
        up = cluster.up()
    cluster.report_up(f"upgrade {OLD_VERSION} -> {NEW_VERSION}", up)
    cluster.report(f"the workload answered {poller.polls - len(poller.failures)} of {poller.polls} requests during the upgrade")
    assert poller.polls >= 20 and not poller.failures, poller.failures

    for name, node in cluster.nodes().items():
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{NEW_VERSION}", name
        assert not node["spec"].get("unschedulable"), f"{name} is still cordoned"
    pods = cluster.json("get", "pods", "-n", "kube-system")["items"]
    images = {pod["metadata"]["name"]: [c["image"] for c in pod["spec"]["containers"]] for pod in pods
              if pod["status"]["phase"] == "Running"}
    for component in STATIC_PODS:
        assert images.get(f"{component}-{CONTROL_PLANE}") == [f"{REGISTRY}/{component}:v{NEW_VERSION}"], (component, images)
    proxies = [name for name in images if name.startswith("kube-proxy-")]
    assert len(proxies) == 2 and all(images[name] == [f"{REGISTRY}/kube-proxy:v{NEW_VERSION}"] for name in proxies), images
    cluster_configuration = yaml.safe_load(
        cluster.json("get", "configmap", "kubeadm-config", "-n", "kube-system")["data"]["ClusterConfiguration"])
    assert cluster_configuration["kubernetesVersion"] == f"v{NEW_VERSION}"
    for node in cluster.settings.nodes:
        packages = cluster.ssh(
            str(node.ip), "dpkg-query -W -f '${Package} ${Version}\\n' kubeadm kubelet kubectl; apt-mark showhold").stdout
        for package in ("kubeadm", "kubelet", "kubectl"):
            assert re.search(rf"^{package} {re.escape(NEW_VERSION)}-\S+$", packages, re.M), (node.name, packages)
            assert re.search(rf"^{package}$", packages, re.M), f"{package} is not held on {node.name}"
    # Both nodes were drained: every pod the workload had before was evicted and replaced, and yet it answered.
    after = workload_pods(cluster)
    assert len(after) == 2 and not set(before) & set(after), (before, after)

    cluster.pulumi("preview", "--expect-no-changes")
    cluster.report(f"an up after the upgrade: {cluster.up('--expect-no-changes').seconds:.0f} s")
