"""The Kubernetes version provider, called directly (mocks never run dynamic providers)."""

from __future__ import annotations

import pytest

from providers.kubernetes_version import KubernetesVersionProvider
from tests.program import run_serialized_provider

KEY = "kvm-kubeadm:kubernetes.version"
WORKERS = ["k8sworker1", "k8sworker2", "k8sworker3"]
# What the engine hands back as the recorded inputs: numbers as floats.
RECORDED = {
    "version": "1.36.3", "control_plane": "k8smaster", "workers": WORKERS, "concurrency": 1.0, "config_key": KEY, "plan": [],
}


def configured(**changes) -> dict:
    return {**RECORDED, "concurrency": 1, "plan": None, **changes}


def check(version: str, **changes):
    return KubernetesVersionProvider().check(dict(RECORDED), configured(version=version, **changes))


def test_a_new_cluster_and_an_unchanged_version_have_no_plan_and_no_diff():
    provider = KubernetesVersionProvider()
    assert provider.check({}, configured()).inputs["plan"] == []
    result = provider.check(dict(RECORDED), configured())
    assert result.failures == [] and result.inputs["plan"] == []
    assert not provider.diff("kubernetes-version", dict(RECORDED), result.inputs).changes


def test_a_patch_upgrade_plans_the_control_plane_then_each_worker_after_the_one_before():
    result = check("1.36.4")
    assert result.failures == []
    assert result.inputs["plan"] == [
        "k8smaster (control plane, first): kubeadm 1.36.4, upgrade plan and apply, drain, kubelet and kubectl, uncordon",
        *(
            f"{worker} (after {after}): kubeadm 1.36.4, upgrade node, drain, kubelet and kubectl, uncordon, Ready"
            for worker, after in zip(WORKERS, ["k8smaster", *WORKERS])
        ),
    ]
    assert KubernetesVersionProvider().diff("kubernetes-version", dict(RECORDED), result.inputs).changes


def test_a_minor_upgrade_moves_the_package_repository_first():
    plan = check("1.37.0").inputs["plan"]
    assert len(plan) == 4
    assert all("repo v1.37, kubeadm 1.37.0" in line for line in plan), plan


def test_workers_go_as_many_at_a_time_as_configured():
    plan = check("1.37", concurrency=2).inputs["plan"]
    assert [line.split(":")[0] for line in plan] == [
        "k8smaster (control plane, first)", "k8sworker1 (after k8smaster)", "k8sworker2 (after k8smaster)",
        "k8sworker3 (after k8sworker1)",
    ]


def test_a_worker_added_with_the_upgrade_installs_the_new_version_and_is_not_in_the_rollout():
    plan = check("1.37.0", workers=[*WORKERS, "k8sworker4"]).inputs["plan"]
    assert plan[-1] == "k8sworker4 (new): installs 1.37.0 and joins once k8smaster is upgraded; not in the rollout"
    assert len(plan) == 5


@pytest.mark.parametrize("version", ["1.36", "1.36.3"])
def test_an_unpinned_patch_of_the_same_minor_needs_no_upgrade(version):
    result = check(version)
    assert result.failures == [] and result.inputs["plan"] == []


@pytest.mark.parametrize("version, reason", [
    ("1.36.2", "kubeadm does not downgrade a cluster. Put 1.36.3 back; an older version needs a new cluster."),
    ("1.35", "kubeadm does not downgrade a cluster. Put 1.36.3 back; an older version needs a new cluster."),
    ("1.38.0", "kubeadm upgrades one minor version at a time. Set 1.37 first and `pulumi up`, then 1.38.0."),
    ("2.0.0", "kubeadm does not change the major version. Put 1.36.3 back."),
    ("latest", "these are not both MAJOR.MINOR or MAJOR.MINOR.PATCH versions, so the change cannot be planned."),
])
def test_what_kubeadm_cannot_do_fails_check_naming_the_key(version, reason):
    failures = check(version).failures
    assert [(f.property, f.reason) for f in failures] == [("version", f"{KEY} 1.36.3 -> {version}: {reason}")]


def test_a_node_list_or_concurrency_change_is_recorded_without_a_plan():
    provider = KubernetesVersionProvider()
    for news in (configured(workers=WORKERS[:2]), configured(concurrency=2)):
        checked = provider.check(dict(RECORDED), news)
        assert checked.inputs["plan"] == [] and provider.diff("kubernetes-version", dict(RECORDED), checked.inputs).changes


def test_create_and_update_record_the_inputs():
    provider = KubernetesVersionProvider()
    created = provider.create(configured())
    assert created.id == "kubernetes-version" and created.outs == configured()
    news = check("1.37.0").inputs
    assert provider.update("kubernetes-version", dict(RECORDED), news).outs == news


def test_provider_survives_pulumi_serialisation_in_a_fresh_interpreter():
    result = run_serialized_provider(
        KubernetesVersionProvider(),
        f"old = {RECORDED!r}\n"
        "print(type(provider).__module__, provider.check(old, {**old, 'version': '1.38.1'}).failures[0].property)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["providers.kubernetes_version", "version"]


# With a VIP the record also holds the control planes that join the leader and the endpoint.
HA_RECORDED = {**RECORDED, "control_planes": ["k8smaster2", "k8smaster3"], "endpoint": "192.168.56.100:8443"}


def ha_check(**changes):
    return KubernetesVersionProvider().check(dict(HA_RECORDED), {**HA_RECORDED, "concurrency": 1, "plan": None, **changes})


def test_a_new_highly_available_cluster_plans_its_control_planes_joins_in_order():
    plan = KubernetesVersionProvider().check({}, {**HA_RECORDED, "plan": None}).inputs["plan"]
    assert plan == [
        "k8smaster (leader): kubeadm init behind 192.168.56.100:8443",
        "k8smaster2 (joins after k8smaster): certificates uploaded, kubeadm join --control-plane, etcd member healthy",
        "k8smaster3 (joins after k8smaster2): certificates uploaded, kubeadm join --control-plane, etcd member healthy",
    ]


def test_an_upgrade_goes_leader_then_each_control_plane_then_the_workers():
    result = ha_check(version="1.36.4")
    assert result.failures == []
    assert [line.split(":")[0] for line in result.inputs["plan"]] == [
        "k8smaster (control plane, first)", "k8smaster2 (control plane, after k8smaster)",
        "k8smaster3 (control plane, after k8smaster2)", "k8sworker1 (after k8smaster3)", "k8sworker2 (after k8sworker1)",
        "k8sworker3 (after k8sworker2)",
    ]
    assert "upgrade node" in result.inputs["plan"][1] and "upgrade plan and apply" in result.inputs["plan"][0]


def test_growing_from_three_to_five_plans_the_two_joins_and_five_to_three_the_two_departures():
    grown = ha_check(control_planes=["k8smaster2", "k8smaster3", "k8smaster4", "k8smaster5"])
    assert grown.failures == [] and [line.split(" (")[0] for line in grown.inputs["plan"]] == ["k8smaster4", "k8smaster5"]
    five = {**HA_RECORDED, "control_planes": ["k8smaster2", "k8smaster3", "k8smaster4", "k8smaster5"]}
    shrunk = KubernetesVersionProvider().check(five, {**HA_RECORDED, "concurrency": 1, "plan": None})
    assert shrunk.failures == []
    assert [line.split(":")[0] for line in shrunk.inputs["plan"]] == ["k8smaster4 (leaves)", "k8smaster5 (leaves)"]
    assert KubernetesVersionProvider().diff("kubernetes-version", five, shrunk.inputs).changes


@pytest.mark.parametrize("recorded, control_planes", [(HA_RECORDED, []), (
    {**HA_RECORDED, "control_planes": [f"k8smaster{i}" for i in range(2, 8)]}, ["k8smaster2", "k8smaster3"])])
def test_losing_a_majority_of_the_control_planes_at_once_is_refused(recorded, control_planes):
    result = KubernetesVersionProvider().check(dict(recorded), {**recorded, "control_planes": control_planes, "plan": None})
    (failure,) = result.failures
    before = len(recorded["control_planes"]) + 1
    assert failure.reason.startswith(f"kvm-kubeadm:controlPlane.count: {before} -> {len(control_planes) + 1} control planes")
    assert "Keep at least" in failure.reason


@pytest.mark.parametrize("recorded, endpoint", [
    (RECORDED, "192.168.56.100:8443"),  # a VIP added to a cluster made without one (kubeadm #3079)
    (HA_RECORDED, "192.168.56.101:8443"),  # a VIP moved
])
def test_a_changed_endpoint_is_refused_naming_the_vip_key(recorded, endpoint):
    news = {**recorded, "control_planes": recorded.get("control_planes", []), "endpoint": endpoint, "plan": None}
    (failure,) = KubernetesVersionProvider().check(dict(recorded), news).failures
    assert failure.reason.startswith("kvm-kubeadm:controlPlane.vip: the cluster's endpoint is ")
    assert "cannot change on a live cluster" in failure.reason

