"""The control-plane sizing guard, called directly (mocks never run dynamic providers)."""

from __future__ import annotations

import pytest

from providers.sizing_guard import ResizeNotAllowed, SizingGuardProvider
from tests.program import run_serialized_provider

SIZE = {"node": "k8smaster", "vcpu": 2, "memory_mib": 4096, "allow_replace": False, "config_prefix": "kvm-kubeadm:controlPlane"}


def test_same_size_is_no_change():
    diff = SizingGuardProvider().diff("k8smaster", dict(SIZE), dict(SIZE))
    assert not diff.changes and not diff.replaces


def test_resize_without_opt_in_fails_naming_the_keys():
    with pytest.raises(ResizeNotAllowed) as refused:
        SizingGuardProvider().diff("k8smaster", dict(SIZE), {**SIZE, "vcpu": 4, "memory_mib": 8192})
    message = str(refused.value)
    assert "kvm-kubeadm:controlPlane.vcpu 2 -> 4" in message
    assert "kvm-kubeadm:controlPlane.memoryMiB 4096 -> 8192" in message
    assert "kvm-kubeadm:controlPlane.allowReplace" in message and "k8smaster" in message


def test_resize_with_opt_in_is_an_update_not_a_replace():
    news = {**SIZE, "memory_mib": 8192, "allow_replace": True}
    provider = SizingGuardProvider()
    diff = provider.diff("k8smaster", dict(SIZE), news)
    assert diff.changes and not diff.replaces
    assert provider.update("k8smaster", dict(SIZE), news).outs == news


def test_create_records_the_size():
    result = SizingGuardProvider().create(dict(SIZE))
    assert result.id == "k8smaster" and result.outs == SIZE


def test_guard_survives_pulumi_serialisation_in_a_fresh_interpreter():
    result = run_serialized_provider(
        SizingGuardProvider(),
        "old = {'node': 'n', 'vcpu': 2, 'memory_mib': 4096, 'allow_replace': False, 'config_prefix': 'p'}\n"
        "try:\n"
        "    provider.diff('n', old, {**old, 'vcpu': 4})\n"
        "except Exception as refused:\n"
        "    print(type(provider).__module__, type(refused).__name__)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["providers.sizing_guard", "ResizeNotAllowed"]
