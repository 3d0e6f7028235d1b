"""Scaling, mirrors and change handling, by comparing two builds of the program under mocks."""

from __future__ import annotations

import copy

import pytest
import yaml

from components import procedure
from tests.program import NETWORK, ProgramRun, run_program

REGISTRATION_FIELDS = ("raw_inputs", "parent", "ignore_changes", "deleted_with", "additional_secret_outputs")


def build(config: dict, **changes) -> ProgramRun:
    """Run the program with `section.key=value` changes applied to a copy of config."""
    config = copy.deepcopy(config)
    for path, value in changes.items():
        section, key = path.split("__")
        config.setdefault(section, {})[key] = value
    run = run_program(config)
    assert run.error is None, run.error
    return run


def changed_between(before: ProgramRun, after: ProgramRun) -> set[str]:
    """Names of resources present in both runs whose inputs or options differ."""
    old = {r.urn: r for r in before.registrations}
    changed = set()
    for resource in after.registrations:
        previous = old.get(resource.urn)
        if previous is not None and any(getattr(previous, f) != getattr(resource, f) for f in REGISTRATION_FIELDS):
            changed.add(resource.name)
    return changed


def test_adding_a_worker_creates_only_that_worker(dev_config):
    three, four = build(dev_config, workers__count=3), build(dev_config, workers__count=4)
    old_urns = {r.urn for r in three.registrations}
    added = {r.name for r in four.registrations if r.urn not in old_urns}
    assert added and all(name.startswith("k8s-k8sworker4") for name in added), added
    assert len(added) == 1 + 1 + 3 + len(procedure.WORKER)  # component, node, volume+seed+domain, its stages
    # Existing nodes and their stages are untouched; only the cluster-wide pieces follow
    # (the version record learns the new node list).
    assert changed_between(three, four) == {"k8s-network-net", "k8s-ready", "k8s-kubernetes-version"}
    (network,) = four.of_type(NETWORK)
    assert {"hostname": "k8sworker4", "ip": "192.168.56.126"} in network.inputs["dns"]["hosts"]


def test_the_chain_to_a_ready_cluster_does_not_grow_with_the_workers(dev_config):
    # Workers join independently of each other; only a version change upgrades them in turn.
    chains = {count: build(dev_config, workers__count=count).longest_chain("k8s-ready") for count in (1, 3, 12)}
    assert len(set(chains.values())) == 1 and chains[3] > 5, chains


def test_removing_a_worker_leaves_the_others_untouched(dev_config):
    four, three = build(dev_config, workers__count=4), build(dev_config, workers__count=3)
    remaining = {r.urn for r in three.registrations}
    removed = {r.name for r in four.registrations if r.urn not in remaining}
    assert removed and all(name.startswith("k8s-k8sworker4") for name in removed), removed
    assert changed_between(four, three) == {"k8s-network-net", "k8s-ready", "k8s-kubernetes-version"}


def test_a_stage_script_input_change_reruns_that_stage_only(dev_config):
    before = build(dev_config)
    after = build(dev_config, kubernetes__readyTimeoutSeconds=1200)
    assert changed_between(before, after) == {
        "k8s-ready", "k8s-k8smaster-cni", "k8s-k8smaster-uncordon", "k8s-metrics-server", "k8s-local-path",
        *(f"k8s-k8sworker{i}-{stage}" for i in (1, 2, 3) for stage in ("ready", "uncordon")),
    }


def test_a_firewall_change_reruns_os_prep_only(dev_config):
    before, after = build(dev_config), run_program({**dev_config, "firewall": "open-ports"})
    assert after.error is None
    assert changed_between(before, after) == {f"k8s-{n}-os-prep" for n in ("k8smaster", "k8sworker1", "k8sworker2", "k8sworker3")}


def test_a_worker_resize_changes_only_worker_domains(dev_config):
    before, after = build(dev_config), build(dev_config, workers__memoryMiB=3072)
    assert changed_between(before, after) == {f"k8s-k8sworker{i}-node-domain" for i in (1, 2, 3)}


def test_a_control_plane_resize_reaches_its_guard_and_domain(dev_config):
    before, after = build(dev_config), build(dev_config, controlPlane__vcpu=4)
    assert changed_between(before, after) == {"k8s-k8smaster-node-sizing", "k8s-k8smaster-node-domain"}
    assert after.by_name("k8s-k8smaster-node-sizing").inputs["vcpu"] == 4


def test_the_resize_opt_in_reaches_the_guard(dev_config):
    opted_in = build(dev_config, controlPlane__allowReplace=True)
    assert opted_in.by_name("k8s-k8smaster-node-sizing").inputs["allow_replace"] is True


# --- mirrors -----------------------------------------------------------------------------

def script_param(run: ProgramRun, name: str, param: str) -> str:
    return run.by_name(name).param(param)


def init_cluster_config(run: ProgramRun) -> dict:
    (init,) = run.commands("init")
    return next(d for d in yaml.safe_load_all(init.inputs["stdin"]) if d["kind"] == "ClusterConfiguration")


def test_default_mirrors_are_upstream(dev_config):
    run = build(dev_config)
    assert script_param(run, "k8s-k8sworker1-packages", "KUBE_REPO") == "https://pkgs.k8s.io/core:/stable:/v1.36/deb/"
    assert script_param(run, "k8s-k8sworker1-packages", "IMAGE_REPOSITORY") == "registry.k8s.io"
    assert script_param(run, "k8s-k8smaster-packages", "OS_APT_MIRROR") == ""
    assert script_param(run, "k8s-k8smaster-cni", "MANIFEST_URL") == (
        "https://github.com/flannel-io/flannel/releases/download/v0.27.4/kube-flannel.yml"
    )
    assert init_cluster_config(run)["imageRepository"] == "registry.k8s.io"
    assert "images:" not in script_param(run, "k8s-k8smaster-cni", "KUSTOMIZATION")


@pytest.mark.parametrize("mirrors", ["cn", {"preset": "cn"}])
def test_cn_preset_reproduces_the_aliyun_setup(dev_config, mirrors):
    run = run_program({**dev_config, "mirrors": mirrors})
    assert run.error is None, run.error
    aliyun_images = "registry.aliyuncs.com/google_containers"
    assert init_cluster_config(run)["imageRepository"] == aliyun_images
    for node in ("k8smaster", "k8sworker3"):
        packages = f"k8s-{node}-packages"
        assert script_param(run, packages, "IMAGE_REPOSITORY") == aliyun_images
        assert script_param(run, packages, "KUBE_REPO") == "https://mirrors.aliyun.com/kubernetes-new/core/stable/v1.36/deb/"
        assert script_param(run, packages, "OS_APT_MIRROR") == "https://mirrors.aliyun.com"


def test_preset_and_explicit_overrides_combine(dev_config):
    mirrors = {
        "preset": "cn",
        "flannelManifest": "https://mirror.example.test/flannel/{version}/kube-flannel.yml",
        "flannelRegistry": "registry.example.test/flannel-io",
        "osApt": "https://apt.example.test",
    }
    run = run_program({**dev_config, "mirrors": mirrors})
    assert run.error is None, run.error
    assert init_cluster_config(run)["imageRepository"] == "registry.aliyuncs.com/google_containers"
    assert script_param(run, "k8s-k8smaster-cni", "MANIFEST_URL") == "https://mirror.example.test/flannel/v0.27.4/kube-flannel.yml"
    assert script_param(run, "k8s-k8sworker2-packages", "OS_APT_MIRROR") == "https://apt.example.test"
    kustomization = yaml.safe_load(script_param(run, "k8s-k8smaster-cni", "KUSTOMIZATION"))
    new_names = {image["newName"] for image in kustomization["images"]}
    assert new_names == {"registry.example.test/flannel-io/flannel", "registry.example.test/flannel-io/flannel-cni-plugin"}
