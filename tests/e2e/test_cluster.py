"""A real cluster end to end, on the offline mirror kit: a first `pulumi up` whose kubeadm
init fails, a second that completes it without manual cleanup, then Ready nodes, the pod
network, DNS and Services, idempotence, a patch upgrade of Kubernetes node by node while a
workload keeps answering, a worker added (at the new version) and removed, a worker lost
behind Pulumi's back, and a clean destroy.

Everything runs inside the network namespace of the e2e harness: libvirtd and the VMs under
QEMU software emulation, the kit's HTTP server and TLS registry on the e2e network's gateway,
pulumi, ssh and kubectl. The stack is the e2e stack (the dev stack with what this machine
requires) with `stages: kubernetes`, the kit's printed `mirrors` and `registries` blocks, the
control plane plus one worker (a second one for the scale step), kubeadm timeouts raised
for software emulation, and `kubernetes.version` at the older patch release the kit serves
(MIRROR_KUBE_UPGRADE_FROM, 1.36.2) until the upgrade step moves it to the kit's (and the
program's) default, MIRROR_KUBE_VERSION (1.36.3).

Without the upgrade step it took about 35 minutes here, too long to sit next to the rest of
the suite within CI's 90 minutes with a margin, so it runs when KVMK_CLUSTER_E2E=1 is set
(see the README's end-to-end section).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest
import yaml

from tests.e2e.stack import STACK, E2eStack, Up, e2e_config, e2e_project, reporter, require_e2e_prerequisites
from tests.harness.libvirt_netns import LibvirtNetns
from tests.mirror import KUBE_VERSIONS, SERVE, kit_served, registry_tags
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import require

pytestmark = pytest.mark.e2e

KIT = PROJECT_DIR / ".cache" / "mirror"
GATEWAY = "192.168.56.1"
REGISTRY = f"{GATEWAY}:5000"
CONTROL_PLANE, FIRST_WORKER, SECOND_WORKER = "k8smaster", "k8sworker1", "k8sworker2"
# What follows the node list: DNS entries, the cluster ready check and the version record.
CLUSTER_WIDE = {"k8s-network-net", "k8s-ready", "k8s-kubernetes-version"}
# The upgrade: installed at the older patch release the kit serves, then moved to the kit's
# (and the program's) default.
OLD_VERSION = (KUBE_VERSIONS[1:] or [""])[0].removeprefix("v")
NEW_VERSION = KUBE_VERSIONS[0].removeprefix("v")
# Each node's upgrade steps, in the order procedure.py runs them.
UPGRADE_STEPS = {CONTROL_PLANE: ("upgrade-kubeadm", "upgrade-apply", "drain", "upgrade-kubelet", "uncordon"),
                 FIRST_WORKER: ("upgrade-kubeadm", "upgrade-node", "drain", "upgrade-kubelet", "uncordon")}
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The workload that must keep answering through the upgrade, on a fixed NodePort of the control plane.
WORKLOAD, NODE_PORT = "e2e-upgrade", 30080
OPT_IN = "KVMK_CLUSTER_E2E"
NOT_IN_CI = (
    f"the real-cluster e2e is not part of the default run: it took 35 minutes on this 2-core machine under software "
    f"emulation before its upgrade step (and over 47 in a run whose control plane crash-looped), which next to the rest of the suite (about 22 "
    f"minutes) leaves CI's 90 minutes too thin a margin; run it with {OPT_IN}=1 .venv/bin/pytest tests/e2e/test_cluster.py "
    f"(README: End to end)"
)
if not os.environ.get(OPT_IN):
    pytest.skip(NOT_IN_CI, allow_module_level=True)

# Under software emulation on two cores kubeadm's defaults are far too short (README: End to end).
EMULATION_TIMEOUTS = {
    "controlPlaneTimeoutSeconds": 1800, "kubeletTimeoutSeconds": 900, "joinTimeoutSeconds": 1200,
    "apiCallTimeoutSeconds": 600, "readyTimeoutSeconds": 2400, "leaderElectionRenewDeadlineSeconds": 60,
    "etcdHealthCheckTimeoutSeconds": 10,
}
# The libvirt objects of the Cluster component that must exist before the kit can bind the gateway.
NETWORK_URNS = [
    f"urn:pulumi:{STACK}::kvm-kubeadm::{type_}::{name}" for type_, name in [
        ("kvm:kubeadm:Cluster", "k8s"),
        ("kvm:kubeadm:Cluster$pulumi:providers:libvirt", "k8s-libvirt"),
        ("kvm:kubeadm:Cluster$kvm:infra:Network", "k8s-network"),
        ("kvm:kubeadm:Cluster$kvm:infra:Network$libvirt:index/network:Network", "k8s-network-net"),
    ]
]


def kubectl_binary():
    """The kit's kubectl, of the version the e2e stack (the dev stack) installs."""
    return KIT / "build" / f"kubernetes-v{load_stack_config('dev')['kubernetes']['version']}" / "bin" / "kubectl"


def kit_missing() -> str | None:
    if not (KIT / "www" / "kubernetes").is_dir() or not kubectl_binary().exists():
        return "no mirror kit: run tools/mirror-kit/build.sh (tools/setup.sh --full does)"
    if len(KUBE_VERSIONS) < 2:
        return "tools/versions.env names no MIRROR_KUBE_UPGRADE_FROM: the upgrade step has no version to start from"
    if not list((KIT / "www" / "kubernetes").glob(f"v*/deb/*/kubeadm_{OLD_VERSION}-*.deb")):
        return f"the mirror kit has no Kubernetes {OLD_VERSION} to upgrade from: run tools/mirror-kit/build.sh again"
    return None


def busybox_image() -> str:
    """The kit's flannel CNI plugin image, which carries a static busybox: no image from outside the kit."""
    (tag,) = [ref for ref in registry_tags(KIT) if ref.startswith("flannel-io/flannel-cni-plugin:")]
    return f"{REGISTRY}/{tag}"


class RunningCluster(E2eStack):
    """The e2e stack as a Kubernetes cluster: kubectl through the exported kubeconfig."""

    first_up: Up
    second_up: Up

    def kubeconfig(self) -> str:
        return self.project.pulumi("stack", "output", "kubeconfig", "--show-secrets").stdout

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 300) -> str:
        path = self.project.directory / "kubeconfig"
        if not path.exists():
            path.write_text(self.kubeconfig())
            path.chmod(0o600)
        result = self.namespace.run([str(kubectl_binary()), f"--kubeconfig={path}", *args], check=False, input=stdin,
                                    timeout=timeout)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def nodes(self) -> dict[str, dict]:
        return {node["metadata"]["name"]: node for node in self.json("get", "nodes")["items"]}

    def wait_for_node(self, name: str, ready: str, seconds: float = 600) -> None:
        deadline = time.monotonic() + seconds
        while True:
            conditions = self.nodes().get(name, {}).get("status", {}).get("conditions", [])
            if {c["type"]: c["status"] for c in conditions}.get("Ready") == ready:
                return
            assert time.monotonic() < deadline, f"{name} not Ready={ready} after {seconds:.0f} s"
            time.sleep(10)

    def report_up(self, what: str, up: Up) -> None:
        self.report(f"{what}: {up.seconds:.0f} s")
        for name, seconds in sorted(up.durations().items(), key=lambda item: -item[1]):
            if seconds >= 5:
                self.report(f"    {name}: {seconds} s")


@pytest.fixture(scope="module")
def cluster(ssh_keys, tmp_path_factory, request):
    require_e2e_prerequisites()
    require(kit_missing())
    report = reporter(request, "cluster")
    with LibvirtNetns() as namespace:
        config = e2e_config(ssh_keys)
        config.update(stages="kubernetes", workers={**config["workers"], "count": 1},
                      kubernetes={**config["kubernetes"], **EMULATION_TIMEOUTS, "version": OLD_VERSION})
        project = e2e_project(namespace, tmp_path_factory.mktemp("cluster"), config)
        running = RunningCluster(namespace, project, config, ssh_keys, report)
        try:
            # The kit serves on the gateway address, which exists once the network does.
            running.up(*(f"--target={urn}" for urn in NETWORK_URNS))
            with kit_served(KIT, namespace.name, GATEWAY) as printed:
                served = {key.split(":", 1)[1]: value for key, value in printed.items()}
                # The fault: a first up whose kubeadm init cannot pull its images.
                broken = {**served["mirrors"], "imageRepository": f"{REGISTRY}/no-such-path"}
                running.set_config({**config, **served, "mirrors": broken})
                running.first_up = running.up(check=False)
                running.report_up("first up (init fails)", running.first_up)
                running.set_config({**config, **served})
                running.second_up = running.up(check=False)
                running.report_up("second up (to every node Ready)", running.second_up)
                assert running.second_up.returncode == 0, running.second_up.diagnostics()[-8000:]
                control_plane = str(running.settings.control_plane.ip)
                health = running.ssh(control_plane, "sudo grep -h 'healthy after' /var/log/kvm-kubeadm/init.log", check=False)
                report(f"kubeadm init under emulation: {' / '.join(health.stdout.split(chr(10)))}")
                yield running
        finally:
            # A failed test above must not leave VMs behind: destroy is idempotent.
            project.pulumi("destroy", "--yes", "--skip-preview", check=False, timeout=1800)


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
    assert cluster.kubectl("get", "--raw=/readyz").strip() == "ok"


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


def upgrade_workload(image: str) -> str:
    """Two HTTP servers that tolerate the control plane's taint and spread over the nodes, a budget that
    lets a drain evict only one at a time, and a NodePort Service. A server keeps answering for a while
    after it is told to stop, so that kube-proxy drops it before it goes."""
    busybox = "/bin/busybox"
    serve = f"{busybox} mkdir -p /www && echo kvm-kubeadm > /www/index.html && exec {busybox} httpd -f -p 8080 -h /www"
    labels = {"app": WORKLOAD}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": WORKLOAD}, "spec": {
        "replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": labels}}],
            "containers": [{
                "name": "http", "image": image, "command": [busybox, "sh", "-c", serve],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                "lifecycle": {"preStop": {"exec": {"command": [busybox, "sleep", "15"]}}},
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
    assert cluster.settings.kubernetes.version == OLD_VERSION
    # Pods that no controller owns (the traffic test's) would stop a drain: make sure they are gone.
    cluster.kubectl("delete", "pod", "e2e-echo", "e2e-client", "--ignore-not-found", "--wait=true", "--timeout=300s",
                    timeout=360)
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
    cluster.kubectl("delete", "-f", "-", "--wait=true", "--timeout=300s", stdin=upgrade_workload("unused"), timeout=360)


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
    # After the upgrade, a new node installs the new version directly.
    kubelet = cluster.nodes()[SECOND_WORKER]["status"]["nodeInfo"]["kubeletVersion"]
    assert kubelet == f"v{cluster.settings.kubernetes.version}" == f"v{NEW_VERSION}", kubelet

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
    up = time.monotonic()
    cluster.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
    cluster.report(f"pulumi destroy: {time.monotonic() - up:.0f} s")
    assert cluster.namespace.snapshot() == cluster.before
    subprocess.run([str(SERVE), "--stop"], capture_output=True, timeout=60, check=True)
    assert cluster.stray_processes() == set()
