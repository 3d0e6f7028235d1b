"""End to end on real libvirt: `pulumi up` boots the dev topology and runs OS prep,
a second up changes nothing, a worker comes and goes, destroy leaves nothing.

Everything runs inside a network namespace the test creates (libvirtd, its NAT
network, the VMs, pulumi and ssh), under QEMU software emulation. The stack is
the dev topology with what this machine requires: domain type qemu, the
locally built Debian image with direct kernel boot, and `stages: os-prep`
(the test network has no route to package mirrors).
"""

from __future__ import annotations

import time

import pytest

from components.procedure import WORKER_PORTS, control_plane_ports, os_prep_params
from components.scripts import render
from tests.e2e.stack import STACK, E2eStack, e2e_config, e2e_project, reporter, require_e2e_prerequisites
from tests.harness.libvirt_netns import LibvirtNetns

pytestmark = pytest.mark.e2e

SIZING = {"k8smaster": (2, 4096), "k8sworker1": (2, 2048), "k8sworker2": (2, 2048), "k8sworker3": (2, 2048)}


@pytest.fixture(scope="module")
def cluster(ssh_keys, tmp_path_factory, request):
    require_e2e_prerequisites()
    report = reporter(request, "e2e")
    with LibvirtNetns() as namespace:
        project = e2e_project(namespace, tmp_path_factory.mktemp("e2e"), e2e_config(ssh_keys))
        running = E2eStack(namespace, project, e2e_config(ssh_keys), ssh_keys, report)
        report(f"pulumi up to 4 nodes SSH-ready and OS-prepped: {running.up().seconds:.0f} s")
        yield running
        # A failed test above must not leave VMs behind: destroy is idempotent.
        project.pulumi("destroy", "--yes", "--skip-preview", check=False, timeout=1800)


def test_four_running_domains_with_the_configured_sizing(cluster):
    domains = {}
    for name in SIZING:
        info = cluster.namespace.virsh("dominfo", f"{STACK}-{name}")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        assert fields["State"].strip() == "running", info
        domains[name] = (int(fields["CPU(s)"]), int(fields["Max memory"].split()[0]) // 1024)
    assert domains == SIZING


def test_each_node_answers_ssh_at_its_fixed_ip_with_its_hostname(cluster):
    for node in cluster.settings.nodes:
        assert cluster.ssh(str(node.ip), "hostname").stdout.strip() == node.name


def test_os_prep_took_effect_on_every_node(cluster):
    probe = (
        "PATH=$PATH:/usr/sbin:/sbin; "
        "swapon --noheadings --show=NAME | wc -l; "
        "grep -E '^(overlay|br_netfilter) ' /proc/modules | cut -d' ' -f1 | sort | paste -sd,; "
        "sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward | paste -sd,"
    )
    for node in cluster.settings.nodes:
        output = cluster.ssh(str(node.ip), probe).stdout
        assert output.split() == ["0", "br_netfilter,overlay", "1,1,1"], f"{node.name}: {output}"


def test_every_node_resolves_every_other_by_name(cluster):
    names = [node.name for node in cluster.settings.nodes]
    lookup = "; ".join(f"getent ahostsv4 {name} | head -n1 | cut -d' ' -f1" for name in names)
    for node in cluster.settings.nodes:
        addresses = cluster.ssh(str(node.ip), lookup).stdout.split()
        assert dict(zip(names, addresses)) == {n.name: str(n.ip) for n in cluster.settings.nodes}, node.name


def test_os_prep_run_again_changes_nothing(cluster):
    for node, ports in [(cluster.settings.control_plane, control_plane_ports(cluster.settings)),
                        (cluster.settings.workers[0], WORKER_PORTS)]:
        script = render("os-prep", node.name, os_prep_params(cluster.settings, str(node.ip), ports))
        result = cluster.ssh(str(node.ip), "sudo -n bash -s", stdin=script)
        assert result.stdout.strip().splitlines() == [f"[os-prep {node.name}] done"], result.stdout


def test_a_second_up_changes_nothing(cluster):
    cluster.pulumi("preview", "--expect-no-changes")
    cluster.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=1800)


def test_a_control_plane_resize_needs_the_opt_in(cluster):
    cluster.pulumi("config", "set", "--path", "controlPlane.vcpu", "3")
    try:
        refused = cluster.pulumi("preview", check=False)
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output
        assert "kvm-kubeadm:controlPlane.vcpu 2 -> 3" in output and "controlPlane.allowReplace" in output, output
    finally:
        cluster.pulumi("config", "set", "--path", "controlPlane.vcpu", "2")
    cluster.pulumi("preview", "--expect-no-changes")


def test_adding_then_removing_a_worker_touches_only_that_worker(cluster):
    cluster.set_workers(4)
    planned = cluster.planned_steps()
    assert planned and all(op in ("create", "update") for op, _ in planned), planned
    created = {name for op, name in planned if op == "create"}
    assert all(name.startswith("k8s-k8sworker4") for name in created), created
    # The network gains the new DNS entry in place; nothing else changes.
    assert {name for op, name in planned if op == "update"} <= {"k8s-network-net"}, planned
    cluster.report(f"adding k8sworker4: {cluster.up().seconds:.0f} s")
    assert cluster.ssh("192.168.56.126", "hostname").stdout.strip() == "k8sworker4"
    assert "running" in cluster.namespace.virsh("domstate", f"{STACK}-k8sworker4")

    cluster.set_workers(3)
    planned = cluster.planned_steps()
    deleted = {name for op, name in planned if op == "delete"}
    assert deleted and all(name.startswith("k8s-k8sworker4") for name in deleted), planned
    assert {name for op, name in planned if op not in ("delete", "update")} == set(), planned
    cluster.report(f"removing k8sworker4: {cluster.up().seconds:.0f} s")
    assert f"{STACK}-k8sworker4" not in cluster.namespace.virsh("list", "--all", "--name")


def test_destroy_leaves_no_domain_volume_network_or_process(cluster):
    start = time.monotonic()
    cluster.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
    cluster.report(f"pulumi destroy: {time.monotonic() - start:.0f} s")
    # Exactly what libvirt had before the first `pulumi up` is left.
    assert cluster.namespace.snapshot() == cluster.before
    assert cluster.stray_processes() == set()
