"""The prepared node image against today's path, side by side in one run on the same host, back to back:
the e2e stack (control plane plus one worker, the default addons) on the mirror kit, cloned from a
prepared image, then from the base image; each up to every node Ready, then a worker added.

On the prepared side the first up builds the image; the figures compared are a repeated cluster's
(destroyed and made again), which finds the image in the pool and builds nothing. The image is
inspected offline (debugfs over a raw copy): it carries no node's identity, and each clone makes its
own (machine-id, SSH host keys, hostname, cloud-init instance).

Only one libvirt harness runs at a time, so each side runs to its end inside its fixture and keeps
what the tests check. Opt-in (KVMK_CLUSTER_E2E=1): the two sides take about an hour here (README:
Prepared node image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from components.config import libvirt_name
from providers.prepared_image import PREFIX
from tests.e2e.cluster import (
    CONTROL_PLANE, FIRST_WORKER, SECOND_WORKER, RunningCluster, cluster_on_kit, identity_left_in, skip_unless_opted_in,
)
from tests.e2e.stack import STACK, Up, reporter
from tests.program import load_stack_config

pytestmark = pytest.mark.e2e
skip_unless_opted_in("tests/e2e/test_prepared_image.py", "its two sides took about an hour")

# The cluster-wide step that ends when every node is Ready, and the image's.
READY, IMAGE = "k8s-ready", "k8s-prepared-image"


@dataclass
class Side:
    """One side's ups (to every node Ready, then with a worker added) and what it found on the way."""

    up: Up | None = None
    add_worker: Up | None = None
    first_up: Up | None = None
    """The prepared side's: the one that built the image."""
    image: dict = field(default_factory=dict)
    """The prepared image's stack output after the first up, and after the repeated one."""
    image_files: dict[str, object] = field(default_factory=dict)
    """What the image holds, read offline: a file's content or a directory's names, by path."""
    identities: dict[str, list[str]] = field(default_factory=dict)
    """Each clone's IDENTITY lines, by node."""
    kept_after_destroy: set[str] = field(default_factory=set)
    """The volumes a destroy left in the pool."""
    second_worker_version: str = ""


def seconds_to_ready(up: Up) -> int:
    """From the up's first event to the end of the cluster's ready step (every node Ready)."""
    (end,) = [event["timestamp"] for event in up.events
              if event.get("resOutputsEvent", {}).get("metadata", {}).get("urn", "").endswith(f"::{READY}")]
    return end - up.events[0]["timestamp"]


def timed(running: RunningCluster, what: str, name: str) -> Up:
    up = running.up()
    running.report_up(what, up)
    running.keep_for_the_critical_path(up, name)
    return up


@pytest.fixture(scope="module")
def prepared(ssh_keys, tmp_path_factory, request) -> Side:
    side, workdir = Side(), tmp_path_factory.mktemp("prepared")
    with cluster_on_kit(ssh_keys, workdir, reporter(request, "prepared image"), image={"prepared": True}) as running:
        running.set_config({**running.config, **running.served})
        side.first_up = timed(running, "first up (builds the prepared image)", "prepared-first-up")
        side.image["first"] = running.prepared_image()
        running.report(f"prepared image: {side.image['first']['sizeBytes'] / 2**30:.2f} GiB in the pool, "
                       f"built in {side.first_up.durations()[IMAGE]} s")
        side.image_files = running.read_prepared_image(workdir)
        side.identities = {node.name: running.identity(str(node.ip)) for node in running.settings.nodes}
        running.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
        # The harness's pool is new, and only the stack used it.
        side.kept_after_destroy = {name for _, name in running.namespace.snapshot().volumes}
        side.up = timed(running, "repeated cluster (the image in the pool)", "prepared-up")
        side.image["repeated"] = running.prepared_image()
        running.set_workers(2)
        side.add_worker = timed(running, f"adding {SECOND_WORKER}", "prepared-add-worker")
        side.second_worker_version = running.nodes()[SECOND_WORKER]["status"]["nodeInfo"]["kubeletVersion"]
    return side


@pytest.fixture(scope="module")
def base(ssh_keys, tmp_path_factory, request) -> Side:
    """Today's path, after the prepared side (one harness at a time: the tests that need the prepared
    side come first)."""
    side = Side()
    with cluster_on_kit(ssh_keys, tmp_path_factory.mktemp("base"), reporter(request, "base image")) as running:
        running.set_config({**running.config, **running.served})
        side.up = timed(running, "up (to every node Ready, with the addons)", "base-up")
        running.set_workers(2)
        side.add_worker = timed(running, f"adding {SECOND_WORKER}", "base-add-worker")
        side.second_worker_version = running.nodes()[SECOND_WORKER]["status"]["nodeInfo"]["kubeletVersion"]
        running.destroy_leaves_nothing()
    return side


def test_the_first_up_builds_the_image_and_a_repeated_cluster_finds_it(prepared):
    first, repeated = prepared.image["first"], prepared.image["repeated"]
    name = first["volume"].rsplit("/", 1)[-1]
    assert name.startswith(PREFIX) and first["built"] is True and first["sizeBytes"] > 0, first
    # Destroy left the image, and nothing else of the stack; the next cluster built nothing.
    assert prepared.kept_after_destroy == {name}
    # The same volume; its allocation, read again, may differ by a few blocks as the host's filesystem settles.
    assert repeated["volume"] == first["volume"] and repeated["built"] is False, repeated
    assert abs(repeated["sizeBytes"] - first["sizeBytes"]) < first["sizeBytes"] / 100, repeated
    assert prepared.up.durations()[IMAGE] < 30


def test_the_image_carries_no_identity(prepared):
    assert identity_left_in(prepared.image_files) == []


def test_the_image_holds_the_packages_and_the_images(prepared):
    assert {"kubeadm", "kubelet", "kubectl", "containerd", "crictl"} <= prepared.image_files["/usr/bin"]
    assert len(prepared.image_files["/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256"]) > 10


def test_each_clone_makes_its_own_identity(prepared):
    for node, (machine_id, hostname, instance_id, host_key, *_) in prepared.identities.items():
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id), (node, machine_id)
        assert hostname == node and instance_id == libvirt_name(STACK, node), (node, hostname, instance_id)
    machine_ids = {lines[0] for lines in prepared.identities.values()}
    host_keys = {lines[3] for lines in prepared.identities.values()}
    assert len(machine_ids) == len(host_keys) == len(prepared.identities) == 2, prepared.identities


def test_the_stages_on_a_clone_find_the_packages_and_images_in_place(prepared):
    said = prepared.first_up.diagnostics()
    for node in (CONTROL_PLANE, FIRST_WORKER):
        assert re.search(rf"\[packages {node}\] kubeadm \S+, kubelet \S+, kubectl \S+ installed", said), node
        assert f"[packages {node}] containerd" not in said, node
    # A worker added later is cloned from the same image, at the configured version.
    assert prepared.second_worker_version == f"v{load_stack_config('dev')['kubernetes']['version']}"


def test_the_base_image_path_reaches_ready_and_adds_a_worker(base, request):
    """Today's path alone (its side's figures, without the prepared one: `-k base_image_path`)."""
    report = reporter(request, "base image")
    report(f"pulumi up {round(base.up.seconds)} s, to every node Ready {seconds_to_ready(base.up)} s, "
           f"adding a worker {round(base.add_worker.seconds)} s")
    assert base.second_worker_version == f"v{load_stack_config('dev')['kubernetes']['version']}"


def test_side_by_side_figures(prepared, base, request):
    report = reporter(request, "side by side")
    for what, figure in (("pulumi up", lambda up: round(up.seconds)), ("to every node Ready", seconds_to_ready)):
        fast, slow = figure(prepared.up), figure(base.up)
        report(f"{what}: base image {slow} s, prepared image {fast} s ({fast / slow:.0%})")
    fast, slow = round(prepared.add_worker.seconds), round(base.add_worker.seconds)
    report(f"adding a worker: base image {slow} s, prepared image {fast} s ({fast / slow:.0%})")
    report(f"the prepared side's first up, with the build: {round(prepared.first_up.seconds)} s")
