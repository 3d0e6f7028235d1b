"""The learning cluster end to end, in every CI run: the `single` stack (one schedulable control
plane, cloned from a prepared image that its first up builds) on the mirror kit, through every stage
to Ready with the metrics and storage addons, then the image and the node's own identity, `kubectl
top`, a volume that outlives its pod, DNS, the dashboard's manifests and RBAC against the real API,
idempotence and a clean destroy that keeps the image (setting: tests/e2e/cluster.py).

Headlamp's image is not in a kit built here (its source is refused by the Go module proxy, so only
`fill-from-upstream.sh` on a connected machine copies it): the stack's dashboard is turned off, and its
manifests pass the API server's server-side dry run instead, while its login ServiceAccount, token and
role bindings are applied for real and asked what they may do.
"""

from __future__ import annotations

import base64
import re
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from components import addons
from components.config import libvirt_name, parse
from providers.etcd_snapshot import checked_archive
from providers.prepared_image import PREFIX as PREPARED_PREFIX
from tests.e2e.cluster import (
    CONTROL_PLANE, busybox_image, client_loop, control_planes_up_on_kit, identity_left_in, kubectl_binary, longest_silence,
)
from tests.e2e.stack import STACK

pytestmark = pytest.mark.e2e

# The stack's Headlamp switch is the single stack's own (on); the kit cannot serve its image.
WITHOUT_DASHBOARD = {"headlamp": False}
BUSYBOX = "/bin/busybox"
# Under emulation metrics-server's first scrape, and the API server's view of it, take a while.
METRICS_SECONDS = 600
# One control plane: its API server is down while it restarts on the renewed certificates.
RENEWAL_SILENCE_SECONDS = 600
# The up waits until the restarted API server is ready: asked this long after the up, it answers, but
# for a moment of its etcd check (cluster.wait_for_readyz). A real run whose up did not wait: the API
# server went down after the up, for 80 s.
AFTER_THE_RENEWAL_SECONDS = 120
A_MOMENT_SECONDS = 30


@pytest.fixture(scope="module")
def single(ssh_keys, tmp_path_factory, request):
    with control_planes_up_on_kit(request, ssh_keys, tmp_path_factory, "single", WITHOUT_DASHBOARD,
                                  "up (to the node Ready, with the addons)") as running:
        running.report_control_plane_start()
        yield running


def pod(name: str, image: str, command: list[str], volume_claim: str | None = None) -> dict:
    spec: dict = {"terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                  "containers": [{"name": name, "image": image, "command": command}]}
    if volume_claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": volume_claim}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def run_to_completion(cluster, manifest: dict, seconds: int = 600) -> str:
    """Apply a pod that runs once, wait for it to succeed, and return its log."""
    name = manifest["metadata"]["name"]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    deadline = time.monotonic() + seconds
    while (phase := cluster.json("get", "pod", name)["status"].get("phase")) not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"pod {name} still {phase} after {seconds} s"
        time.sleep(5)
    log = cluster.kubectl("logs", name)
    assert phase == "Succeeded", (name, log, cluster.kubectl("describe", "pod", name))
    return log


def test_the_node_is_ready_and_schedulable_and_the_api_ready(single):
    (node,) = single.nodes().values()
    assert node["metadata"]["name"] == CONTROL_PLANE
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    # minikube style: the control plane's taint is gone, so workloads run on it.
    assert not [t for t in node["spec"].get("taints", []) if t["key"] == "node-role.kubernetes.io/control-plane"]
    single.wait_for_readyz()


def test_the_node_is_a_clone_of_the_prepared_image_with_an_identity_of_its_own(single, tmp_path):
    image = single.prepared_image()
    assert image["built"] is True and image["volume"].rsplit("/", 1)[-1].startswith(PREPARED_PREFIX), image
    files = single.read_prepared_image(tmp_path)
    single.report(f"prepared image: {image['sizeBytes'] / 2**30:.2f} GiB in the pool, "
                  f"built in {single.first_up.durations()['k8s-prepared-image']} s")
    assert identity_left_in(files) == []
    assert {"kubeadm", "kubelet", "kubectl", "containerd"} <= files["/usr/bin"]
    machine_id, hostname, instance_id, _host_key, *_ = single.identity(str(single.settings.control_plane.ip))
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id) and hostname == CONTROL_PLANE, (machine_id, hostname)
    assert instance_id == libvirt_name(STACK, CONTROL_PLANE)
    # Its stages found the packages in place.
    assert re.search(rf"\[packages {CONTROL_PLANE}\] kubeadm \S+, kubelet \S+, kubectl \S+ installed",
                     single.first_up.diagnostics())


def test_coredns_answers_a_pod(single):
    log = run_to_completion(single, pod("single-dns", busybox_image(single.registry),
                                        [BUSYBOX, "nslookup", "kubernetes.default.svc.cluster.local"]))
    assert "10.96.0.1" in log, log


def test_kubectl_top_gives_figures(single):
    deadline = time.monotonic() + METRICS_SECONDS
    while (top := single.kubectl_run("top", "nodes", "--no-headers")).returncode != 0 or CONTROL_PLANE not in top.stdout:
        assert time.monotonic() < deadline, f"kubectl top nodes after {METRICS_SECONDS} s: {top.stdout}{top.stderr}"
        time.sleep(15)
    # NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%
    assert re.search(rf"^{CONTROL_PLANE}\s+\d+m\s+\d+%\s+\d+Mi\s+\d+%", top.stdout, re.M), top.stdout
    single.report(f"kubectl top nodes: {top.stdout.strip()}")
    pods = single.kubectl("top", "pods", "-A", "--no-headers")
    assert re.search(r"^kube-system\s+kube-apiserver-\S+\s+\d+m\s+\d+Mi", pods, re.M), pods


def test_a_claim_binds_on_the_default_class_and_its_data_outlives_the_pod(single):
    classes = single.json("get", "storageclass")["items"]
    defaults = [c["metadata"]["name"] for c in classes
                if c["metadata"].get("annotations", {}).get(addons.DEFAULT_CLASS) == "true"]
    assert defaults == [addons.LOCAL_PATH_CLASS], classes
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "single-data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}
    single.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(claim))
    image = busybox_image(single.registry)
    run_to_completion(single, pod("single-writer", image, [BUSYBOX, "sh", "-c", "echo kvm-kubeadm > /data/note"],
                                  "single-data"))
    bound = single.json("get", "pvc", "single-data")
    assert bound["status"]["phase"] == "Bound" and bound["spec"]["storageClassName"] == addons.LOCAL_PATH_CLASS, bound
    single.kubectl("delete", "pod", "single-writer", "--wait=true", timeout=300)
    assert run_to_completion(single, pod("single-reader", image, [BUSYBOX, "cat", "/data/note"], "single-data")) == "kvm-kubeadm\n"
    volume = single.json("get", "pv", bound["spec"]["volumeName"])["spec"]
    path = (volume.get("hostPath") or volume.get("local"))["path"]
    assert path.startswith(f"{single.settings.addons.local_path_dir}/"), volume


def dashboard(single, access: str) -> list[dict]:
    """The Headlamp addon's documents at `access`, as the stack would apply them, but its Namespace."""
    settings = parse({**single.config, "addons": {**single.config["addons"], "headlamp": True, "headlampAccess": access}},
                     STACK, single.project.directory)
    return [d for d in addons.headlamp_documents(settings) if d["kind"] != "Namespace"]


@pytest.fixture(scope="module")
def dashboard_namespace(single):
    """The dashboard's namespace, made for real: a dry run cannot place objects in a namespace it only
    pretends to make. It goes with the cluster (a teardown of its own would run after the destroy)."""
    single.kubectl("create", "namespace", addons.HEADLAMP_NAMESPACE)
    return addons.HEADLAMP_NAMESPACE


@pytest.mark.parametrize("access", ["read-only", "cluster-admin"])
def test_the_dashboards_manifest_passes_the_api_servers_dry_run(single, dashboard_namespace, access):
    output = single.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(dashboard(single, access)))
    assert "deployment.apps/headlamp created (server dry run)" in output, output
    for binding in addons.headlamp_bindings(access):
        assert f"clusterrolebinding.rbac.authorization.k8s.io/{binding} created (server dry run)" in output, output


def test_the_read_only_login_reads_everything_but_secrets_and_changes_nothing(single, dashboard_namespace):
    login = [d for d in dashboard(single, "read-only") if d["kind"] not in ("Deployment", "Service")]
    single.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(login))
    deadline = time.monotonic() + 300
    while not (token := single.kubectl("-n", dashboard_namespace, "get", "secret", addons.HEADLAMP_TOKEN_SECRET,
                                       "-o", "jsonpath={.data.token}")):
        assert time.monotonic() < deadline, "the login's token Secret is still empty"
        time.sleep(5)
    # The admin kubeconfig's cluster with the login's token as the only credential (a client
    # certificate next to it would authenticate first).
    login_kubeconfig = yaml.safe_load(single.kubeconfig())
    login_kubeconfig["users"] = [{"name": "headlamp-login", "user": {"token": base64.b64decode(token).decode()}}]
    login_kubeconfig["contexts"][0]["context"]["user"] = "headlamp-login"
    path = single.project.directory / "headlamp-login.kubeconfig"
    path.write_text(yaml.safe_dump(login_kubeconfig))
    path.chmod(0o600)

    def as_login(*args: str) -> subprocess.CompletedProcess:
        return single.namespace.run([str(kubectl_binary()), f"--kubeconfig={path}", *args], check=False, timeout=120)

    whoami = as_login("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:serviceaccount:{dashboard_namespace}:{addons.HEADLAMP_LOGIN}", whoami

    def may(verb: str, resource: str) -> bool:
        return as_login("auth", "can-i", verb, resource, "--all-namespaces").stdout.strip() == "yes"

    for verb, resource in [("list", "nodes"), ("list", "pods"), ("get", "deployments"), ("list", "persistentvolumes"),
                           ("list", "storageclasses"), ("list", "nodes.metrics.k8s.io")]:
        assert may(verb, resource), (verb, resource)
    for verb, resource in [("get", "secrets"), ("list", "secrets"), ("create", "deployments"), ("delete", "pods"),
                           ("update", "clusterrolebindings")]:
        assert not may(verb, resource), (verb, resource)


def test_an_up_with_a_new_trigger_keeps_a_checked_snapshot_on_the_host(single):
    single.kubectl("create", "configmap", "kept-by-the-snapshot", "--from-literal=kept=yes")
    directory = single.project.directory / "snapshots"
    single.set_config({**single.config, "snapshots": {"trigger": "e2e", "directory": str(directory)}})
    up = single.up()
    path = Path(single.pulumi("stack", "output", "etcdSnapshot").stdout.strip())
    status = checked_archive(path)
    single.report(f"an up that takes a snapshot: {up.seconds:.0f} s; {path.stat().st_size} bytes, "
                  f"revision {status['revision']}, {status['totalKey']} keys")
    assert path.parent == directory / STACK
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with tarfile.open(path) as archive:
        assert b"/configmaps/default/kept-by-the-snapshot" in archive.extractfile("./etcd.db").read()
        ca_key = archive.extractfile("./pki/ca.key").read().decode().splitlines()[1]
    assert ca_key not in single.pulumi("stack", "export", "--show-secrets").stdout, "the CA key is not in the state"


def test_a_lost_control_plane_comes_back_on_a_new_vm_restored_from_the_snapshot(single):
    """The ConfigMap goes after the snapshot, then the control plane's VM and disk are lost behind Pulumi's back;
    a refresh and an up with `snapshots.restoreFrom` make a new one from the snapshot, and the ConfigMap is back."""
    single.kubectl("delete", "configmap", "kept-by-the-snapshot")
    path = single.pulumi("stack", "output", "etcdSnapshot").stdout.strip()
    settings = single.settings
    single.namespace.virsh("destroy", libvirt_name(STACK, CONTROL_PLANE))
    single.namespace.virsh("undefine", libvirt_name(STACK, CONTROL_PLANE))
    single.namespace.virsh("vol-delete", "--pool", settings.libvirt.pool, libvirt_name(STACK, f"{CONTROL_PLANE}-root.qcow2"))
    single.pulumi("refresh", "--yes", "--skip-preview")
    single.set_config({**single.config, "snapshots": {**single.config["snapshots"], "restoreFrom": path}})
    up = single.up()
    single.report_up("an up that restores a new control plane from the snapshot", up)
    assert "kubeadm init done on the restored cluster" in up.diagnostics()
    single.wait_for_readyz()
    single.wait_for_node(CONTROL_PLANE, "True")
    assert single.json("get", "configmap", "kept-by-the-snapshot")["data"] == {"kept": "yes"}


def client_certificate_expiry(kubeconfig: str) -> str:
    """The notAfter of the client certificate in an admin kubeconfig."""
    user = yaml.safe_load(kubeconfig)["users"][0]["user"]
    pem = base64.b64decode(user["client-certificate-data"])
    return subprocess.run(["openssl", "x509", "-noout", "-enddate"], input=pem, capture_output=True, check=True).stdout.decode()


def test_an_up_whose_window_is_reached_renews_the_certificates_while_the_api_answers(single):
    """A window wider than the certificates' year makes them due at once: the renewal, the restarted static
    pods, the new expiry in `certificatesExpire` and in the exported kubeconfig, and the API through it all."""
    before = single.pulumi("stack", "output", "certificatesExpire").stdout.strip()
    kubeconfig_before = client_certificate_expiry(single.kubeconfig())
    config = single.config
    single.set_config({**config, "certificates": {"renewBeforeDays": 400}})
    with client_loop(single.namespace, f"https://{single.settings.control_plane.ip}:6443/readyz") as answers:
        up = single.up()
        ended = time.monotonic()
        time.sleep(AFTER_THE_RENEWAL_SECONDS)
    single.report_up("an up that renews the certificates", up)
    after = single.pulumi("stack", "output", "certificatesExpire").stdout.strip()
    silence = longest_silence(answers)
    after_the_up = [answer for answer in answers if answer[0] >= ended]
    silence_after_the_up = longest_silence(after_the_up)
    single.report(f"certificates: {before} -> {after}; the API answered {sum(ok for _, ok in answers)} of "
                  f"{len(answers)} questions, the longest silence {silence:.0f} s; after the up "
                  f"{sum(ok for _, ok in after_the_up)} of {len(after_the_up)}, the longest silence {silence_after_the_up:.0f} s")
    assert after > before
    assert client_certificate_expiry(single.kubeconfig()) != kubeconfig_before, "the exported kubeconfig is the renewed one"
    assert answers and silence < RENEWAL_SILENCE_SECONDS, answers
    assert after_the_up and after_the_up[-1][1] and silence_after_the_up < A_MOMENT_SECONDS, after_the_up
    single.wait_for_readyz()
    # Back to the default window: recorded, and nothing renewed (a renewal would move the expiry).
    single.set_config(config)
    single.up()
    assert single.pulumi("stack", "output", "certificatesExpire").stdout.strip() == after


def test_a_second_up_changes_nothing(single):
    single.pulumi("preview", "--expect-no-changes")
    up = single.up("--expect-no-changes")
    single.report(f"an up with nothing changed: {up.seconds:.0f} s")


def test_destroy_leaves_no_domain_volume_network_or_process(single):
    single.destroy_leaves_nothing()
