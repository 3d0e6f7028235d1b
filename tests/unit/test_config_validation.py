"""Bad stack config: one error listing every problem by key, before any resource exists."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from components.config import ConfigError, parse
from tests.program import PROJECT_DIR, run_program


def problems(config: dict, stack: str = "dev", project_dir: Path = PROJECT_DIR) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(config, stack, project_dir)
    return caught.value.problems


def changed(config: dict, path: str, value) -> dict:
    """A deep copy of config with `a.b` set to value (None deletes it)."""
    result = copy.deepcopy(config)
    *parents, leaf = path.split(".")
    target = result
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return result


def test_the_committed_dev_stack_is_valid(dev_config):
    settings = parse(dev_config, "dev", PROJECT_DIR)
    assert [n.name for n in settings.nodes] == ["k8smaster", "k8sworker1", "k8sworker2", "k8sworker3"]


@pytest.mark.parametrize(
    "path, value, key, words",
    [
        ("network.subnet", "192.168.56.0/33", "kvm-kubeadm:network.subnet", "not a valid IPv4 CIDR"),
        ("network.subnet", "192.168.56.7/24", "kvm-kubeadm:network.subnet", "not a valid IPv4 CIDR"),
        ("kubernetes.podCidr", "10.244.0.0/x", "kvm-kubeadm:kubernetes.podCidr", "not a valid IPv4 CIDR"),
        ("kubernetes.serviceCidr", "banana", "kvm-kubeadm:kubernetes.serviceCidr", "not a valid IPv4 CIDR"),
        ("controlPlane.ip", "192.168.56.300", "kvm-kubeadm:controlPlane.ip", "not a valid IPv4 address"),
        ("workers.firstIp", "not-an-ip", "kvm-kubeadm:workers.firstIp", "not a valid IPv4 address"),
        ("network.subnet", "10.244.8.0/24", "kvm-kubeadm:network.subnet", "overlaps kvm-kubeadm:kubernetes.podCidr"),
        ("network.subnet", "10.100.0.0/24", "kvm-kubeadm:network.subnet", "overlaps kvm-kubeadm:kubernetes.serviceCidr"),
        ("kubernetes.podCidr", "10.96.0.0/16", "kvm-kubeadm:kubernetes.podCidr", "overlaps the service CIDR"),
        ("controlPlane.ip", "192.168.57.107", "kvm-kubeadm:controlPlane.ip", "outside the node subnet"),
        ("controlPlane.ip", "192.168.56.0", "kvm-kubeadm:controlPlane.ip", "network or broadcast address"),
        ("controlPlane.ip", "192.168.56.1", "kvm-kubeadm:controlPlane.ip", "gateway address"),
        ("controlPlane.ip", "192.168.56.124", "kvm-kubeadm:workers.firstIp", "already used by k8smaster"),
        ("controlPlane.name", "K8s_Master", "kvm-kubeadm:controlPlane.name", "RFC 1123"),
        ("controlPlane.name", "k8sworker2", "kvm-kubeadm:workers.firstIp", "node name 'k8sworker2' is used twice"),
        ("workers.namePrefix", "worker.", "kvm-kubeadm:workers.namePrefix", "RFC 1123"),
        ("controlPlane.vcpu", 1, "kvm-kubeadm:controlPlane.vcpu", "below kubeadm's minimum of 2"),
        ("workers.memoryMiB", 1024, "kvm-kubeadm:workers.memoryMiB", "below kubeadm's minimum of 2048"),
        ("controlPlane.memoryMiB", 2047, "kvm-kubeadm:controlPlane.memoryMiB", "below kubeadm's minimum of 2048"),
        ("kubernetes.version", "1.36.3-1.1", "kvm-kubeadm:kubernetes.version", "MAJOR.MINOR or MAJOR.MINOR.PATCH"),
        ("kubernetes.version", "v1.36", "kvm-kubeadm:kubernetes.version", "MAJOR.MINOR or MAJOR.MINOR.PATCH"),
        ("kubernetes.version", "latest", "kvm-kubeadm:kubernetes.version", "MAJOR.MINOR or MAJOR.MINOR.PATCH"),
        ("network.subnett", "192.168.56.0/24", "kvm-kubeadm:network.subnett", "unknown key"),
        ("workers.cont", 4, "kvm-kubeadm:workers.cont", "unknown key"),
        ("kubernetes.podCIDR", "10.244.0.0/16", "kvm-kubeadm:kubernetes.podCIDR", "unknown key"),
        ("mirrors.preset", "moon", "kvm-kubeadm:mirrors.preset", "unknown preset"),
        ("workers.count", 200, "kvm-kubeadm:workers.count", "do not fit in 192.168.56.0/24 (room for 132)"),
        ("workers.vcpu", "two", "kvm-kubeadm:workers.vcpu", "must be int"),
        ("kubernetes.version", 1.36, "kvm-kubeadm:kubernetes.version", 'must be str, got 1.36; quote it: "1.36"'),
        ("kubernetes.tokenTtlHours", 0, "kvm-kubeadm:kubernetes.tokenTtlHours", "must be between 1 and 8760, got 0"),
        ("kubernetes.readyTimeoutSeconds", 59, "kvm-kubeadm:kubernetes.readyTimeoutSeconds", "must be at least 60, got 59"),
        ("libvirt.bootTimeoutSeconds", 30, "kvm-kubeadm:libvirt.bootTimeoutSeconds", "must be at least 60, got 30"),
        ("libvirt.bootTimeoutSeconds", "10m", "kvm-kubeadm:libvirt.bootTimeoutSeconds", "must be int"),
        ("libvirt.uri", "qemu", "kvm-kubeadm:libvirt.uri", "is not a libvirt URI"),
        ("libvirt.pool", "my pool", "kvm-kubeadm:libvirt.pool", "is not a libvirt storage pool name"),
        ("network.domain", "K8s Lan", "kvm-kubeadm:network.domain", "is not a DNS domain"),
        ("flannel.version", "0.27.4", "kvm-kubeadm:flannel.version", "must be a flannel release tag"),
        ("containerd.source", "apt", "kvm-kubeadm:containerd.source", "'apt' must be 'docker' or 'distro'"),
        ("containerd.version", "latest", "kvm-kubeadm:containerd.version", "MAJOR.MINOR or MAJOR.MINOR.PATCH"),
        ("mirrors.containerdPackages", "download.docker.com", "kvm-kubeadm:mirrors.containerdPackages", "http(s) URL"),
        ("mirrors.imageRepository", "https://registry.example", "kvm-kubeadm:mirrors.imageRepository", "not a registry path"),
    ],
)
def test_each_rule_names_its_key(dev_config, path, value, key, words):
    found = problems(changed(dev_config, path, value))
    assert any(p.startswith(f"{key}:") and words in p for p in found), found


def test_missing_public_key_says_how_to_make_one(dev_config, tmp_path):
    found = problems(changed(dev_config, "ssh.publicKeyPath", str(tmp_path / "absent.pub")))
    (problem,) = [p for p in found if p.startswith("kvm-kubeadm:ssh.publicKeyPath:")]
    assert "cannot read" in problem and "ssh-keygen -t ed25519" in problem


def test_unreadable_or_garbage_public_key_is_reported(dev_config, tmp_path):
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("this is not a key\n")
    found = problems(changed(dev_config, "ssh.publicKeyPath", str(garbage)))
    assert any(p.startswith("kvm-kubeadm:ssh.publicKeyPath:") and "not an OpenSSH public key" in p for p in found)
    assert not any("this is not a key" in p for p in found), "key file content must not be echoed"


def test_every_problem_is_reported_together(dev_config):
    bad = changed(dev_config, "network.subnet", "192.168.56.0/99")
    bad = changed(bad, "controlPlane.vcpu", 1)
    bad = changed(bad, "kubernetes.version", "one")
    bad = changed(bad, "workers.colour", "blue")
    keys = {p.split(":", 2)[1] for p in problems(bad)}
    assert {"network.subnet", "controlPlane.vcpu", "kubernetes.version", "workers.colour"} <= keys


def test_error_message_lists_each_problem_on_its_own_line(dev_config):
    bad = changed(changed(dev_config, "controlPlane.vcpu", 1), "workers.memoryMiB", 512)
    with pytest.raises(ConfigError) as caught:
        parse(bad, "dev", PROJECT_DIR)
    message = str(caught.value)
    assert message.startswith("invalid stack configuration (2 problem(s)):")
    assert "\n  - kvm-kubeadm:controlPlane.vcpu:" in message and "\n  - kvm-kubeadm:workers.memoryMiB:" in message


def test_a_bad_stack_registers_no_resources(dev_config):
    run = run_program(changed(dev_config, "controlPlane.vcpu", 1))
    assert isinstance(run.error, ConfigError)
    assert run.registrations == []


def test_config_error_is_a_clean_pulumi_error():
    # RunError makes Pulumi print only the message, without a Python traceback.
    import pulumi

    assert issubclass(ConfigError, pulumi.RunError)


def test_defaults_fill_everything_but_what_only_the_user_knows(ssh_keys):
    private, public = ssh_keys
    settings = parse(
        {
            "ssh": {"privateKeyPath": str(private), "publicKeyPath": str(public)},
            "controlPlane": {"ip": "192.168.56.107"},
            "workers": {"firstIp": "192.168.56.123"},
        },
        "solo",
        PROJECT_DIR / "tests",  # no sibling stack files here
    )
    assert settings.kubernetes.version.count(".") == 2
    assert str(settings.kubernetes.service_cidr) == "10.96.0.0/12" and str(settings.kubernetes.pod_cidr) == "10.244.0.0/16"
    assert settings.libvirt.uri == "qemu:///system" and settings.image.source.startswith("https://cloud-images.ubuntu.com/noble/")
    assert [w.name for w in settings.workers] == ["k8sworker1", "k8sworker2", "k8sworker3"]


def with_registries(config: dict, registries: dict) -> dict:
    return {**config, "registries": registries}


def test_a_plain_http_mirror_needs_its_hosts_explicit_allowance(dev_config):
    found = problems(with_registries(dev_config, {"ghcr.io": {"mirrors": ["http://10.0.0.5:5000"]}}))
    assert found == [
        'kvm-kubeadm:registries["ghcr.io"].mirrors[0]: http://10.0.0.5:5000 is plain HTTP: allow it with '
        'kvm-kubeadm:registries["10.0.0.5:5000"].plainHttp: true'
    ]
    allowed = with_registries(dev_config, {"ghcr.io": {"mirrors": ["http://10.0.0.5:5000"]}, "10.0.0.5:5000": {"plainHttp": True}})
    assert parse(allowed, "dev", PROJECT_DIR).registries[1].plain_http


def test_a_registry_ca_must_be_a_readable_pem_certificate_and_is_never_echoed(dev_config, tmp_path):
    garbage = tmp_path / "ca.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    found = problems(with_registries(dev_config, {"a.example": {"caFile": str(garbage)}, "b.example": {"caFile": str(tmp_path / "absent")}}))
    assert found == [
        f'kvm-kubeadm:registries["a.example"].caFile: {garbage} is not a PEM certificate',
        f'kvm-kubeadm:registries["b.example"].caFile: cannot read {tmp_path / "absent"} (No such file or directory)',
    ]


@pytest.mark.parametrize(
    "registries, key, words",
    [
        ({"Not A Host": {}}, 'kvm-kubeadm:registries["Not A Host"]', "is not a registry host"),
        ({"ghcr.io": {"mirrors": "https://m.example"}}, 'kvm-kubeadm:registries["ghcr.io"].mirrors', "must be list"),
        ({"ghcr.io": {"mirrors": ["ftp://m.example"]}}, 'kvm-kubeadm:registries["ghcr.io"].mirrors[0]', "http(s) URL"),
        ({"ghcr.io": {"mirror": []}}, 'kvm-kubeadm:registries["ghcr.io"].mirror', "unknown key"),
    ],
)
def test_each_registries_rule_names_its_key(dev_config, registries, key, words):
    found = problems(with_registries(dev_config, registries))
    assert any(p.startswith(f"{key}:") and words in p for p in found), found
