"""The e2e stack as a real Kubernetes cluster on the offline mirror kit, shared by the cluster
e2e modules.

Everything runs inside the network namespace of the e2e harness: libvirtd and the VMs under
QEMU software emulation, the kit's HTTP server and TLS registry on the e2e network's gateway,
pulumi, ssh and kubectl. The stack is the e2e stack (the dev stack with what this machine
requires) with `stages: kubernetes`, the kit's printed `mirrors` and `registries` blocks, the
control plane plus one worker, and kubeadm's waits raised and its probes eased for software
emulation.

The one-node learning cluster (test_single, about 26 minutes with its Day 2 steps) runs in every CI
run. The two-node modules (test_cluster, test_cluster_upgrade) take half an hour or more each here, too long to sit next
to it and the rest of the suite within CI's 90 minutes with a margin, so they run only when
KVMK_CLUSTER_E2E=1 is set (README: End to end).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Callable, Iterator

import pytest

from benchmarks import critical_path
from providers.prepared_image import PREFIX as PREPARED_PREFIX
from tests.e2e.stack import STACK, E2eStack, Up, e2e_config, e2e_project, reporter, require_e2e_prerequisites
from tests.harness.libvirt_netns import LibvirtNetns
from tests.mirror import SERVE, kit_served, registry_tags
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import require

KIT = PROJECT_DIR / ".cache" / "mirror"
# Where an up's events and state are kept for benchmarks/critical_path.py.
RUN_RECORD = PROJECT_DIR / ".cache" / "e2e"
REGISTRY_PORT = 5000
# What a node reports of its identity, one line each: machine-id, hostname, cloud-init instance, SSH host key.
IDENTITY = ("cat /etc/machine-id; hostname; sudo cat /var/lib/cloud/data/instance-id; "
            "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
# What the image checks read offline from a prepared image.
IMAGE_FILES = ("/etc/machine-id", "/etc/hostname")
IMAGE_DIRECTORIES = ("/etc/ssh", "/etc/kubernetes", "/var/lib/kubelet", "/home", "/var/lib/cloud", "/usr/bin",
                     "/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256")


def gateway_of(config: dict) -> str:
    """The network's gateway, where the kit serves: the first address of the node subnet."""
    return str(next(IPv4Network(config["network"]["subnet"]).hosts()))


# The dev stack's, which the cluster and upgrade modules run.
GATEWAY = gateway_of(load_stack_config("dev"))
REGISTRY = f"{GATEWAY}:{REGISTRY_PORT}"
CONTROL_PLANE, FIRST_WORKER, SECOND_WORKER = "k8smaster", "k8sworker1", "k8sworker2"
OPT_IN = "KVMK_CLUSTER_E2E"

# Under software emulation on two cores kubeadm's defaults are far too short, and its
# probes cost the control plane too much (README: End to end).
EMULATION_SETTINGS = {
    "controlPlaneTimeoutSeconds": 1800, "kubeletTimeoutSeconds": 900, "joinTimeoutSeconds": 1200,
    "apiCallTimeoutSeconds": 600, "readyTimeoutSeconds": 2400, "leaderElectionRenewDeadlineSeconds": 60,
    "etcdHealthCheckTimeoutSeconds": 10, "etcdApiCallTimeoutSeconds": 1200, "drainTimeoutSeconds": 900,
    "readinessProbePeriodSeconds": 10, "livenessProbeFailureThreshold": 30,
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


def skip_unless_opted_in(module: str, measured: str) -> None:
    """Skip the calling module, saying why and how to run it, unless KVMK_CLUSTER_E2E is set."""
    if not os.environ.get(OPT_IN):
        pytest.skip(
            f"the real-cluster e2e is not part of the default run: {measured} on this 2-core machine under software "
            f"emulation, which next to the rest of the suite (about 30 minutes) leaves CI's 90 minutes too thin a "
            f"margin; run it with {OPT_IN}=1 .venv/bin/pytest {module} (README: End to end)",
            allow_module_level=True,
        )


def kubectl_binary() -> Path:
    """The kit's kubectl, of the version the e2e stack (the dev stack) installs."""
    return KIT / "build" / f"kubernetes-v{load_stack_config('dev')['kubernetes']['version']}" / "bin" / "kubectl"


def kit_missing(version: str) -> str | None:
    """Why the kit cannot install Kubernetes `version` (MAJOR.MINOR.PATCH), or None."""
    if not (KIT / "www" / "kubernetes").is_dir() or not kubectl_binary().exists():
        return "no mirror kit: run tools/mirror-kit/build.sh (tools/setup.sh --full does)"
    if not list((KIT / "www" / "kubernetes").glob(f"v*/deb/*/kubeadm_{version}-*.deb")):
        return f"the mirror kit has no Kubernetes {version}: run tools/mirror-kit/build.sh again"
    return None


def identity_left_in(files: dict) -> list[str]:
    """What of a node's identity the prepared image's files (RunningCluster.read_prepared_image) still hold."""
    left = [f"machine-id {files['/etc/machine-id']!r}"] if files["/etc/machine-id"] else []
    if files["/etc/hostname"].strip() != "localhost":
        left.append(f"hostname {files['/etc/hostname'].strip()!r}")
    left += sorted(f"/etc/ssh/{name}" for name in files["/etc/ssh"] if name.startswith("ssh_host_"))
    left += sorted(f"/var/lib/kubelet/{name}" for name in files["/var/lib/kubelet"] & {"pki", "config.yaml"})
    left += sorted(f"/etc/kubernetes/{name}" for name in files["/etc/kubernetes"] - {"manifests"})
    left += [f"/home/{name}" for name in sorted(files["/home"])]
    left += ["/var/lib/cloud/instance"] if "instance" in files["/var/lib/cloud"] else []
    return left


def busybox_image(registry: str = REGISTRY) -> str:
    """The kit's flannel CNI plugin image, which carries a static busybox: no image from outside the kit."""
    (tag,) = [ref for ref in registry_tags(KIT) if ref.startswith("flannel-io/flannel-cni-plugin:")]
    return f"{registry}/{tag}"


@contextmanager
def client_loop(namespace: LibvirtNetns, url: str) -> Iterator[list[tuple[float, bool]]]:
    """Ask `url` (an API server's /readyz) once a second, each question bounded, while the block runs;
    the answers, as (monotonic time asked, answered ok), fill the list it yields."""
    answers: list[tuple[float, bool]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            asked = time.monotonic()
            result = namespace.run(["curl", "-sk", "--max-time", "3", url], check=False, timeout=30)
            answers.append((asked, result.stdout.strip() == "ok"))
            stop.wait(max(0.0, 1 - (time.monotonic() - asked)))

    client = threading.Thread(target=ask)
    client.start()
    try:
        yield answers
    finally:
        stop.set()
        client.join(timeout=60)


def longest_silence(answers: list[tuple[float, bool]]) -> float:
    """The longest time between two answers that were ok (or before the first, after the last)."""
    if not answers:
        return 0.0
    times = [answers[0][0], *(t for t, ok in answers if ok), answers[-1][0]]
    return max(later - earlier for earlier, later in zip(times, times[1:]))


class RunningCluster(E2eStack):
    """The e2e stack as a Kubernetes cluster: kubectl through the exported kubeconfig."""

    served: dict
    """The `mirrors` and `registries` blocks the kit printed."""
    gateway: str
    """Where the kit serves: the network's gateway."""
    registry: str
    """The kit's registry, `gateway:port`."""

    def kubeconfig(self) -> str:
        return self.project.pulumi("stack", "output", "kubeconfig", "--show-secrets").stdout

    def kubectl_run(self, *args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        path = self.project.directory / "kubeconfig"
        if not path.exists():
            path.write_text(self.kubeconfig())
            path.chmod(0o600)
        return self.namespace.run([str(kubectl_binary()), f"--kubeconfig={path}", *args], check=False, input=stdin,
                                  timeout=timeout)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 300) -> str:
        result = self.kubectl_run(*args, stdin=stdin, timeout=timeout)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def nodes(self) -> dict[str, dict]:
        return {node["metadata"]["name"]: node for node in self.json("get", "nodes")["items"]}

    def wait_for_readyz(self, seconds: float = 120) -> None:
        """Until kube-apiserver's /readyz says ok. Under emulation its etcd check can fail for a moment
        right after the ready stage saw it pass (etcd's disk syncs take seconds here); each miss is reported."""
        deadline = time.monotonic() + seconds
        while (result := self.kubectl_run("get", "--raw=/readyz")).stdout.strip() != "ok":
            answer = (result.stdout + result.stderr).strip()[-300:]
            self.report(f"/readyz not ok yet: {answer}")
            assert time.monotonic() < deadline, f"/readyz not ok after {seconds:.0f} s: {answer}"
            time.sleep(10)

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

    def destroy_leaves_nothing(self) -> None:
        """`pulumi destroy`, then libvirt as before the stack but for the prepared image (a cache, kept when
        the stack has one), the kit stopped and no process left in the namespace."""
        start = time.monotonic()
        self.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
        self.report(f"pulumi destroy: {time.monotonic() - start:.0f} s")
        after = self.namespace.snapshot()
        kept = {volume for volume in after.volumes - self.before.volumes if volume[1].startswith(PREPARED_PREFIX)}
        assert bool(kept) == self.settings.image.prepared, kept
        assert replace(after, volumes=after.volumes - kept) == self.before
        subprocess.run([str(SERVE), "--stop"], capture_output=True, timeout=60, check=True)
        assert self.stray_processes() == set()

    def up_on_the_kit(self, what: str, record: str) -> Up:
        """A first `pulumi up` on the kit's mirrors and registries, reported and kept as RUN_RECORD/<record>.*;
        it must succeed."""
        self.set_config({**self.config, **self.served})
        up = self.up(check=False)
        self.report_up(what, up)
        assert up.returncode == 0, up.diagnostics()[-8000:]
        self.keep_for_the_critical_path(up, record)
        return up

    def keep_for_the_critical_path(self, up: Up, name: str) -> None:
        """The up's engine events and the state as RUN_RECORD/<name>.{events.jsonl,state.json}, and their report."""
        RUN_RECORD.mkdir(parents=True, exist_ok=True)
        events, state = RUN_RECORD / f"{name}.events.jsonl", RUN_RECORD / f"{name}.state.json"
        events.write_text("".join(json.dumps(event) + "\n" for event in up.events))
        state.write_text(json.dumps(self.project.export_state()))
        for line in critical_path.report(critical_path.steps_of(up.events), json.loads(state.read_text())):
            self.report(line)

    def prepared_image(self) -> dict:
        """The stack's `preparedImage` output: volume, sizeBytes, built."""
        return json.loads(self.project.pulumi("stack", "output", "preparedImage", "--json").stdout)

    def identity(self, ip: str) -> list[str]:
        return self.ssh(ip, IDENTITY).stdout.splitlines()

    def read_prepared_image(self, workdir: Path) -> dict[str, object]:
        """From a raw copy of the prepared image, read with debugfs: each of IMAGE_FILES' content and
        each of IMAGE_DIRECTORIES' names."""
        raw = workdir / "prepared.raw"
        self.namespace.run(["qemu-img", "convert", "-O", "raw", self.prepared_image()["volume"], str(raw)], timeout=900)

        def debugfs(request: str) -> str:
            return subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True, text=True, check=True).stdout

        found: dict[str, object] = {path: debugfs(f"cat {path}") for path in IMAGE_FILES}
        for directory in IMAGE_DIRECTORIES:
            # `ls -p`: one /inode/mode/uid/gid/name/size/ line per entry.
            names = {line.strip("/").split("/")[4] for line in debugfs(f"ls -p {directory}").splitlines() if line.count("/") >= 6}
            found[directory] = names - {".", ".."}
        raw.unlink()
        return found

    def report_control_plane_start(self) -> None:
        health = self.ssh(str(self.settings.control_plane.ip),
                          "sudo grep -h 'healthy after' /var/log/kvm-kubeadm/init.log", check=False)
        self.report(f"kubeadm init under emulation: {' / '.join(health.stdout.split(chr(10)))}")


@contextmanager
def cluster_on_kit(ssh_keys, workdir: Path, report: Callable[[str], None], stack: str = "dev", workers: int = 1,
                   addons: dict | None = None, image: dict | None = None, **kubernetes) -> Iterator[RunningCluster]:
    """The e2e stack made from a committed stack (dev unless named) with `stages: kubernetes`, `workers`
    workers, `addons` and `image` keys on top of its own and `kubernetes` keys on top of the emulation
    settings; its network up and the kit serving on the gateway; no node yet. Destroyed on the way out,
    whatever happened in between."""
    require_e2e_prerequisites()
    require(kit_missing(kubernetes.get("version", load_stack_config("dev")["kubernetes"]["version"])))
    with LibvirtNetns() as namespace:
        config = e2e_config(ssh_keys, stack)
        config.update(stages="kubernetes", workers={**config["workers"], "count": workers},
                      addons={**config.get("addons", {}), **(addons or {})}, image={**config["image"], **(image or {})},
                      kubernetes={**config.get("kubernetes", {}), **EMULATION_SETTINGS, **kubernetes})
        project = e2e_project(namespace, workdir, config)
        running = RunningCluster(namespace, project, config, ssh_keys, report)
        try:
            # The kit serves on the gateway address, which exists once the network does.
            running.up(*(f"--target={urn}" for urn in NETWORK_URNS))
            running.gateway = gateway_of(config)
            running.registry = f"{running.gateway}:{REGISTRY_PORT}"
            with kit_served(KIT, namespace.name, running.gateway) as printed:
                running.served = {key.split(":", 1)[1]: value for key, value in printed.items()}
                yield running
        finally:
            # A failed test must not leave VMs behind: destroy is idempotent.
            project.pulumi("destroy", "--yes", "--skip-preview", check=False, timeout=1800)


@contextmanager
def control_planes_up_on_kit(request, ssh_keys, tmp_path_factory, stack: str, addons: dict,
                             what: str) -> Iterator[RunningCluster]:
    """A committed stack of control planes only, after its first `up` on the kit (kept as `first_up`),
    reported as [<stack>] lines; destroyed on the way out."""
    report = reporter(request, stack)
    with cluster_on_kit(ssh_keys, tmp_path_factory.mktemp(stack), report, stack=stack, workers=0,
                        addons=addons) as running:
        running.first_up = running.up_on_the_kit(what, f"{stack}-up")
        yield running
