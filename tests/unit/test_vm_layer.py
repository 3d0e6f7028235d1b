"""The dev stack's VM layer under mocks: what the committed Pulumi.dev.yaml creates."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import with_keys
from tests.program import DOMAIN, DYNAMIC, NETWORK, VOLUME, load_stack_config, read_seed_image, run_program

DEV_SIZING = {"k8smaster": (2, 4096), "k8sworker1": (2, 2048), "k8sworker2": (2, 2048), "k8sworker3": (2, 2048)}
DEV_IPS = {"k8smaster": "192.168.56.107", "k8sworker1": "192.168.56.123", "k8sworker2": "192.168.56.124", "k8sworker3": "192.168.56.125"}


def volumes_by_role(run) -> tuple[list, list, list]:
    """(base images, root volumes, cloud-init seeds) among the registered volumes."""
    volumes = run.of_type(VOLUME)
    seeds = [v for v in volumes if v.inputs["name"].endswith("-cloudinit.iso")]
    roots = [v for v in volumes if "baseVolumeId" in v.inputs]
    return [v for v in volumes if v not in seeds and v not in roots], roots, seeds


@pytest.fixture(scope="module")
def dev(ssh_keys):
    run = run_program(with_keys(load_stack_config("dev"), ssh_keys))
    assert run.error is None, f"dev stack failed under mocks: {run.error}"
    return run


def test_four_domains_with_documented_sizing(dev):
    domains = {d.inputs["name"]: (d.inputs["vcpu"], d.inputs["memory"]) for d in dev.of_type(DOMAIN)}
    assert domains == {f"dev-{name}": sizing for name, sizing in DEV_SIZING.items()}


def test_one_nat_network_on_its_own_subnet(dev):
    (network,) = dev.of_type(NETWORK)
    assert network.inputs["mode"] == "nat"
    assert network.inputs["addresses"] == ["192.168.56.0/24"]
    assert network.inputs["name"] == "dev-k8s"


def test_network_has_a_dns_entry_per_node(dev):
    (network,) = dev.of_type(NETWORK)
    hosts = {h["hostname"]: h["ip"] for h in network.inputs["dns"]["hosts"]}
    assert hosts == DEV_IPS


def test_one_shared_base_volume_and_a_root_volume_and_seed_per_node(dev):
    bases, roots, seeds = volumes_by_role(dev)
    assert len(bases) == 1 and bases[0].inputs["source"].endswith("noble-server-cloudimg-amd64.img")
    base_id = f"{bases[0].name}-id"
    assert sorted(v.inputs["name"] for v in roots) == sorted(f"dev-{n}-root.qcow2" for n in DEV_SIZING)
    for root in roots:
        assert root.inputs["baseVolumeId"] == base_id, root.urn
        assert root.inputs["size"] == 20 * 1024**3, root.urn
    assert sorted(c.inputs["name"] for c in seeds) == sorted(f"dev-{n}-cloudinit.iso" for n in DEV_SIZING)
    # Never a libvirt.CloudInitDisk: its read-back download can hang the provider (README).
    assert not [r.urn for r in dev.registrations if r.type.endswith(":CloudInitDisk")]
    for seed in seeds:
        # Its content is fixed at first boot: a changed seed must not replace the VM.
        assert seed.inputs["format"] == "iso" and seed.ignore_changes == ["source"], seed.urn


def test_each_domain_interface_has_the_fixed_ip_and_waits_for_its_lease(dev):
    seen = {}
    for domain in dev.of_type(DOMAIN):
        (nic,) = domain.inputs["networkInterfaces"]
        assert nic["waitForLease"] is True, domain.urn
        # The wait is bounded by libvirt.bootTimeoutSeconds, not the provider's 5 minutes.
        assert domain.create_timeout == "600s", domain.urn
        assert nic["mac"].startswith("52:54:00:"), domain.urn
        seen[nic["hostname"]] = nic["addresses"]
    assert seen == {name: [ip] for name, ip in DEV_IPS.items()}


def test_boot_timeout_is_configurable(ssh_keys):
    config = with_keys(load_stack_config("dev"), ssh_keys)
    config["libvirt"] = {"bootTimeoutSeconds": 1500}
    run = run_program(config)
    assert run.error is None, run.error
    assert {d.create_timeout for d in run.of_type(DOMAIN)} == {"1500s"}


def test_macs_are_unique(dev):
    macs = [d.inputs["networkInterfaces"][0]["mac"] for d in dev.of_type(DOMAIN)]
    assert len(set(macs)) == 4


def test_domains_have_a_serial_console_and_their_own_disk_and_seed(dev):
    for domain in dev.of_type(DOMAIN):
        assert domain.inputs["consoles"] == [{"type": "pty", "targetType": "serial", "targetPort": "0"}], domain.urn
        node = domain.inputs["name"].removeprefix("dev-")
        assert domain.inputs["disks"] == [{"volumeId": f"k8s-{node}-node-root-id"}, {"volumeId": f"k8s-{node}-node-cloudinit-id"}]
        assert "cloudinit" not in domain.inputs, domain.urn


def test_user_data_is_cloud_config_with_key_hostname_and_guest_agent(dev, ssh_keys):
    public_key = ssh_keys[1].read_text().strip()
    seeds = volumes_by_role(dev)[2]
    assert len(seeds) == 4
    for seed in seeds:
        # What the VM gets: the ISO image the provider uploads, read back with its label.
        label, files = read_seed_image(seed.inputs["source"])
        node = seed.inputs["name"].removeprefix("dev-").removesuffix("-cloudinit.iso")
        assert label == "cidata" and set(files) == {"user-data", "meta-data"}, seed.urn
        assert yaml.safe_load(files["meta-data"]) == {"instance-id": f"dev-{node}", "local-hostname": node}, seed.urn
        text = files["user-data"]
        assert text.startswith("#cloud-config\n"), seed.urn
        document = yaml.safe_load(text)
        assert document["hostname"] == node, seed.urn
        (user,) = document["users"]
        assert user["name"] == "kube" and user["ssh_authorized_keys"] == [public_key], seed.urn
        assert "qemu-guest-agent" in document["packages"], seed.urn
        assert ["systemctl", "enable", "--now", "qemu-guest-agent"] in document["runcmd"], seed.urn


def test_control_plane_domain_waits_for_its_sizing_guard(dev):
    guard = dev.by_name("k8s-k8smaster-node-sizing")
    assert guard.type == DYNAMIC
    assert guard.inputs == {
        "node": "k8smaster", "vcpu": 2, "memory_mib": 4096, "allow_replace": False,
        "config_prefix": "kvm-kubeadm:controlPlane", "__provider": guard.inputs["__provider"],
    }
    control_plane = dev.by_name("k8s-k8smaster-node-domain")
    assert guard.urn in control_plane.dependencies
    for worker in (d for d in dev.of_type(DOMAIN) if d is not control_plane):
        assert guard.urn not in worker.dependencies, worker.urn
    assert len(dev.of_type(DYNAMIC)) == 4  # the guard, the bootstrap token, the Kubernetes version, the certificates


def test_every_child_is_parented_to_its_component(dev):
    by_urn = {r.urn: r for r in dev.registrations}
    expected_parent_type = {
        DOMAIN: "kvm:infra:Node",
        VOLUME: ("kvm:infra:Node", "kvm:kubeadm:Cluster"),
        NETWORK: "kvm:infra:Network",
        "kvm:infra:Node": ("kvm:kubeadm:ControlPlane", "kvm:kubeadm:Worker"),
        "kvm:kubeadm:Worker": "kvm:kubeadm:Cluster",
        "kvm:kubeadm:ControlPlane": "kvm:kubeadm:Cluster",
        "kvm:infra:Network": "kvm:kubeadm:Cluster",
    }
    checked = 0
    for resource in dev.registrations:
        wanted = expected_parent_type.get(resource.type)
        if wanted is None:
            continue
        parent = by_urn.get(resource.parent)
        assert parent is not None, f"{resource.urn} has no component parent"
        assert parent.type in ((wanted,) if isinstance(wanted, str) else wanted), resource.urn
        assert resource.name.startswith(parent.name), f"{resource.urn}: name not derived from {parent.name}"
        checked += 1
    assert checked == 4 + 9 + 1 + 4 + 3 + 1 + 1


def test_root_volume_depends_on_the_base_and_domain_on_the_network(dev):
    (base,) = volumes_by_role(dev)[0]
    (network,) = dev.of_type(NETWORK)
    for domain in dev.of_type(DOMAIN):
        assert network.urn in domain.all_dependencies, domain.urn
    for root in (v for v in dev.of_type(VOLUME) if "baseVolumeId" in v.inputs):
        assert base.urn in root.all_dependencies, root.urn


def test_exports_name_every_node_and_its_ip(dev):
    nodes, secret = dev.resolve(dev.exports["nodes"])
    assert nodes == DEV_IPS and not secret
    assert dev.resolve(dev.exports["controlPlaneIp"]) == ("192.168.56.107", False)
    assert dev.resolve(dev.exports["masterIp"]) == ("192.168.56.107", False), "the tutorial's name stays an alias"
    assert dev.resolve(dev.exports["workerIps"])[0] == [DEV_IPS[f"k8sworker{i}"] for i in (1, 2, 3)]


def test_every_libvirt_resource_uses_the_configured_uri(dev):
    (provider,) = dev.of_type("pulumi:providers:libvirt")
    assert provider.inputs["uri"] == "qemu:///system"
    libvirt_resources = [r for r in dev.registrations if r.type.startswith("libvirt:")]
    assert len(libvirt_resources) == 4 + 1 + 5 + 4
    for resource in libvirt_resources:
        assert resource.provider.startswith(provider.urn + "::"), resource.urn


@pytest.mark.parametrize(
    "cmdline, expected",
    [
        ("root=/dev/vda rw console=ttyS0", [{"console": "ttyS0", "root": "/dev/vda"}, {"_": "rw"}]),
        ("console=tty0 console=ttyS0 quiet", [{"console": "tty0"}, {"console": "ttyS0"}, {"_": "quiet"}]),
        ("", []),
    ],
)
def test_kernel_cmdline_is_in_the_form_the_provider_reads_back(cmdline, expected):
    from components.node import kernel_cmdline

    assert kernel_cmdline(cmdline) == expected


def test_direct_kernel_boot_is_an_ordinary_image_option(dev_config):
    config = {**dev_config, "image": {"source": "https://example.test/debian.qcow2", "kernel": "/srv/vmlinuz",
                                      "initrd": "/srv/initrd.img", "cmdline": "root=/dev/vda rw console=ttyS0"}}
    run = run_program(config)
    assert run.error is None, run.error
    for domain in run.of_type(DOMAIN):
        assert domain.inputs["kernel"] == "/srv/vmlinuz" and domain.inputs["initrd"] == "/srv/initrd.img", domain.urn
        assert domain.inputs["cmdlines"] == [{"console": "ttyS0", "root": "/dev/vda"}, {"_": "rw"}], domain.urn


def test_on_a_prepared_image_the_nodes_install_no_guest_agent_the_builder_does(ssh_keys):
    config = with_keys(load_stack_config("dev"), ssh_keys)
    run = run_program({**config, "image": {**config["image"], "prepared": True}})
    assert run.error is None, run.error
    seeds = volumes_by_role(run)[2]
    assert len(seeds) == 4
    for seed in seeds:
        document = yaml.safe_load(read_seed_image(seed.inputs["source"])[1]["user-data"])
        # The image has it, and installing would first fetch every index of the image's apt sources.
        assert "packages" not in document, seed.urn
        assert ["systemctl", "enable", "--now", "qemu-guest-agent"] in document["runcmd"], seed.urn
    (image,) = [r for r in run.registrations if r.type == DYNAMIC and r.name == "k8s-prepared-image"]
    builder = yaml.safe_load(read_seed_image(image.inputs["seed_path"])[1]["user-data"])
    assert builder["packages"] == ["qemu-guest-agent"] and builder["hostname"] == "image-builder"
    # A new prepared image is for new nodes (the base volume is unknown under mocks: found by name).
    roots = [v for v in run.of_type(VOLUME) if v.inputs["name"].endswith("-root.qcow2")]
    assert len(roots) == 4 and all(root.ignore_changes == ["baseVolumeId"] for root in roots)
