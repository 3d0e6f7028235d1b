"""The control-plane sizing guard, called directly (mocks never run dynamic providers)."""

from __future__ import annotations

from providers.sizing_guard import SizingGuardProvider
from tests.program import run_serialized_provider

SIZE = {"node": "k8smaster", "vcpu": 2, "memory_mib": 4096, "allow_replace": False, "config_prefix": "kvm-kubeadm:controlPlane"}
# What the engine hands back for the recorded size: numbers as floats.
RECORDED = {**SIZE, "vcpu": 2.0, "memory_mib": 4096.0}


def test_first_creation_and_same_size_pass_check_with_no_diff():
    provider = SizingGuardProvider()
    assert provider.check({}, dict(SIZE)).failures == []
    assert provider.check(dict(RECORDED), dict(SIZE)).failures == []
    diff = provider.diff("k8smaster", dict(RECORDED), dict(SIZE))
    assert not diff.changes and not diff.replaces


def test_resize_without_opt_in_fails_check_naming_the_keys():
    failures = SizingGuardProvider().check(dict(RECORDED), {**SIZE, "vcpu": 4, "memory_mib": 8192}).failures
    assert [f.property for f in failures] == ["vcpu"]
    reason = failures[0].reason
    assert "kvm-kubeadm:controlPlane.vcpu 2 -> 4" in reason
    assert "kvm-kubeadm:controlPlane.memoryMiB 4096 -> 8192" in reason
    assert "kvm-kubeadm:controlPlane.allowReplace" in reason and "k8smaster" in reason


def test_resize_with_opt_in_is_an_update_not_a_replace():
    news = {**SIZE, "memory_mib": 8192, "allow_replace": True}
    provider = SizingGuardProvider()
    assert provider.check(dict(RECORDED), news).failures == []
    diff = provider.diff("k8smaster", dict(RECORDED), news)
    assert diff.changes and not diff.replaces
    assert provider.update("k8smaster", dict(RECORDED), news).outs == news


def test_create_records_the_size():
    result = SizingGuardProvider().create(dict(SIZE))
    assert result.id == "k8smaster" and result.outs == SIZE


def test_guard_survives_pulumi_serialisation_in_a_fresh_interpreter():
    result = run_serialized_provider(
        SizingGuardProvider(),
        "old = {'node': 'n', 'vcpu': 2.0, 'memory_mib': 4096.0, 'allow_replace': False, 'config_prefix': 'p'}\n"
        "failures = provider.check(old, {**old, 'vcpu': 4}).failures\n"
        "print(type(provider).__module__, failures[0].property)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["providers.sizing_guard", "vcpu"]
