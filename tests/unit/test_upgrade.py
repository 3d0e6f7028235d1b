"""A change of kubernetes.version under mocks: the rollout's order, its plan, its refusals.

`EngineMocks` does what the engine does with the Kubernetes version resource: it
runs the provider's `check` against the inputs an earlier run recorded, and fails
the registration when the check fails.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from components import kubeadm, procedure
from components.config import parse
from providers.kubernetes_version import KubernetesVersionProvider
from tests.program import DYNAMIC, PROJECT_DIR, Mocks, ProgramRun, run_program

VERSION = "k8s-kubernetes-version"
WORKERS = ["k8sworker1", "k8sworker2", "k8sworker3"]
CONTROL_PLANE_UPGRADE = ["upgrade-kubeadm", "upgrade-apply", "drain", "upgrade-kubelet", "uncordon"]
WORKER_UPGRADE = ["upgrade-kubeadm", "upgrade-node", "drain", "upgrade-kubelet", "uncordon"]


class EngineMocks(Mocks):
    def __init__(self, recorded: dict):
        self.recorded = recorded

    def new_resource(self, args):
        if args.typ == DYNAMIC and args.name == VERSION:
            result = KubernetesVersionProvider().check(self.recorded, dict(args.inputs))
            if result.failures:
                raise RuntimeError(result.failures[0].reason)
            return "kubernetes-version", result.inputs
        return super().new_resource(args)


def configured(config: dict, version: str, **kubernetes) -> dict:
    config = copy.deepcopy(config)
    config.setdefault("kubernetes", {}).update(version=version, **kubernetes)
    return config


def change(config: dict, old: str, new: str, **kubernetes) -> tuple[ProgramRun, ProgramRun]:
    """The program at `old`, then at `new` against what the first run recorded."""
    before = run_program(configured(config, old))
    assert before.error is None, before.error
    recorded = {**before.by_name(VERSION).inputs, "plan": []}
    return before, run_program(configured(config, new, **kubernetes), mocks=EngineMocks(recorded))


def plan_of(run: ProgramRun) -> list[str]:
    assert run.error is None, run.error
    return run.resolve(run.namespace["cluster"].kubernetes_version.plan)[0]


def stage(run: ProgramRun, node: str, name: str):
    return run.by_name(f"k8s-{node}-{name}")


@pytest.fixture(scope="module")
def dev(ssh_keys):
    from tests.conftest import with_keys
    from tests.program import load_stack_config

    return with_keys(load_stack_config("dev"), ssh_keys)


@pytest.fixture(scope="module")
def patch(dev):
    return change(dev, "1.36.3", "1.36.4")


def test_the_version_resource_is_registered_before_any_stage(patch):
    _, run = patch
    names = [r.name for r in run.registrations]
    first_stage = min(names.index(command.name) for command in run.stage_commands())
    assert names.index(VERSION) < first_stage


def test_every_kubernetes_stage_waits_for_the_version_resource(patch):
    _, run = patch
    version = run.by_name(VERSION)
    for node in ["k8smaster", *WORKERS]:
        assert version.urn in stage(run, node, "packages").dependencies, node
        assert version.urn in stage(run, node, "upgrade-kubeadm").dependencies, node


def test_the_control_plane_upgrades_first_in_kubeadms_order(patch):
    _, run = patch
    steps = [stage(run, "k8smaster", name) for name in CONTROL_PLANE_UPGRADE]
    assert stage(run, "k8smaster", "init").urn in steps[0].dependencies
    for before, after in zip(steps, steps[1:]):
        assert before.urn in after.dependencies, after.urn


def test_workers_upgrade_one_at_a_time_each_after_the_one_before_is_ready(patch):
    _, run = patch
    previous = stage(run, "k8smaster", procedure.UPGRADED)
    for worker in WORKERS:
        steps = [stage(run, worker, name) for name in WORKER_UPGRADE]
        assert previous.urn in steps[0].dependencies, steps[0].urn
        for before, after in zip(steps, steps[1:]):
            assert before.urn in after.dependencies, after.urn
        previous = steps[-1]
    # The ready wait is the last step: the next worker starts after it.
    assert "kubectl uncordon" in previous.script and "TIMEOUT_SECONDS" in previous.script


def test_drain_and_uncordon_of_a_worker_run_on_the_control_plane(patch):
    _, run = patch
    for name in ("drain", "uncordon"):
        command = stage(run, "k8sworker2", name)
        assert command.inputs["connection"]["host"] == "192.168.56.107", command.urn
        assert command.param("TARGET_NODE") == "k8sworker2"


def test_every_drain_is_bounded_by_the_configured_timeout(dev):
    run = run_program(configured(dev, "1.36.3", drainTimeoutSeconds=900))
    assert run.error is None, run.error
    for node in ("k8smaster", *WORKERS):
        assert stage(run, node, "drain").param("DRAIN_TIMEOUT_SECONDS") == "900", node
    for worker in WORKERS:
        membership = stage(run, worker, "membership")
        assert "readonly DRAIN_TIMEOUT_SECONDS=900" in membership.inputs["delete"], membership.urn


def test_upgrade_stages_run_on_a_change_only_with_the_new_version(patch):
    before, after = patch
    for node, names in [("k8smaster", CONTROL_PLANE_UPGRADE), *((w, WORKER_UPGRADE) for w in WORKERS)]:
        for name in names:
            old, new = stage(before, node, name), stage(after, node, name)
            assert not new.inputs.get("create"), f"{new.urn}: a new node is at the version already"
            assert (old.param("KUBE_VERSION"), new.param("KUBE_VERSION")) == ("1.36.3", "1.36.4"), new.urn


def test_a_version_change_does_not_run_init_again(dev, patch):
    before, after = patch
    # init would run only to skip: the cluster is initialised, and the upgrade stages move it.
    triggers = stage(before, "k8smaster", "init").inputs["triggers"]
    assert stage(after, "k8smaster", "init").inputs["triggers"] == triggers
    other_pod_cidr = run_program(configured(dev, "1.36.3", podCidr="10.200.0.0/16"))
    assert stage(other_pod_cidr, "k8smaster", "init").inputs["triggers"] != triggers


@pytest.mark.parametrize("new, repo", [("1.36.4", "v1.36"), ("1.37.0", "v1.37")])
def test_a_patch_and_a_minor_change_produce_the_plan(dev, new, repo):
    _, run = change(dev, "1.36.3", new)
    plan = plan_of(run)
    assert [line.split(" ")[0] for line in plan] == ["k8smaster", *WORKERS]
    assert all(f"kubeadm {new}" in line for line in plan), plan
    assert ("repo v1.37" in plan[0]) == (repo == "v1.37")
    assert stage(run, "k8sworker1", "upgrade-kubeadm").param("KUBE_REPO") == f"https://pkgs.k8s.io/core:/stable:/{repo}/deb/"


def test_upgrade_concurrency_lets_that_many_workers_go_at_once(dev):
    _, run = change(dev, "1.36.3", "1.36.4", upgradeConcurrency=2)
    control_plane = stage(run, "k8smaster", procedure.UPGRADED).urn
    assert control_plane in stage(run, "k8sworker1", "upgrade-kubeadm").dependencies
    assert control_plane in stage(run, "k8sworker2", "upgrade-kubeadm").dependencies
    assert stage(run, "k8sworker1", procedure.UPGRADED).urn in stage(run, "k8sworker3", "upgrade-kubeadm").dependencies


@pytest.mark.parametrize("new, reason", [
    ("1.35.0", "kubeadm does not downgrade a cluster"),
    ("1.38.0", "kubeadm upgrades one minor version at a time. Set 1.37 first"),
])
def test_a_downgrade_and_a_skipped_minor_are_refused_before_any_kubernetes_stage(dev, new, reason):
    _, run = change(dev, "1.36.3", new)
    assert f"kvm-kubeadm:kubernetes.version 1.36.3 -> {new}: {reason}" in str(run.error)
    # At most what a version change never touches is registered (and is unchanged in a real run).
    assert {command.stage for command in run.stage_commands()} <= {"os-prep"}


def test_a_worker_added_in_the_same_up_installs_the_new_version_after_the_control_plane(dev):
    _, run = change(dev, "1.36.3", "1.37.0")
    four = run_program(configured({**dev, "workers": {**dev["workers"], "count": 4}}, "1.37.0"),
                       mocks=EngineMocks({**run.by_name(VERSION).inputs, "version": "1.36.3"}))
    assert plan_of(four)[-1] == "k8sworker4 (new): installs 1.37.0 and joins once k8smaster is upgraded; not in the rollout"
    assert stage(four, "k8sworker4", "packages").param("KUBE_VERSION") == "1.37.0"
    # It joins once the control plane is upgraded: its kubelet is never newer than the API server.
    assert stage(four, "k8smaster", procedure.UPGRADED).urn in stage(four, "k8sworker4", "join").dependencies
    # Its upgrade stages are created without running.
    assert all(not stage(four, "k8sworker4", name).inputs.get("create") for name in WORKER_UPGRADE)


@pytest.mark.parametrize("control_plane, wait", [(240, "300s"), (1800, "1800s")])
def test_an_upgrade_waits_for_new_static_pods_as_long_as_for_the_control_plane(dev, control_plane, wait):
    """kubeadm upgrade waits for each replaced static pod under upgradeManifests (default 300 s), not
    under controlPlaneComponentHealthCheck: the configured wait covers both, never below kubeadm's."""
    settings = parse(configured(dev, "1.36.3", controlPlaneTimeoutSeconds=control_plane), "dev", PROJECT_DIR)
    (document,) = yaml.safe_load_all(kubeadm.upgrade_config(settings.kubernetes))
    assert document["kind"] == "UpgradeConfiguration"
    assert document["timeouts"]["controlPlaneComponentHealthCheck"] == f"{control_plane}s"
    assert document["timeouts"]["upgradeManifests"] == wait


def test_a_workers_kubeadm_upgrade_node_finds_the_kubelets_kubeconfig_itself(patch):
    """kubeadm ignores KUBECONFIG; without --kubeconfig it uses kubelet.conf on a worker, where no
    admin.conf exists. The script's KUBECONFIG is kubectl's, and a worker's own file."""
    _, run = patch
    script = stage(run, "k8sworker1", "upgrade-node").script
    (call,) = re.findall(r"^\s*run_logged .*\bkubeadm upgrade node\b.*$", script, re.M)
    assert "--kubeconfig" not in call, call
    assert "export KUBECONFIG=/etc/kubernetes/kubelet.conf" in script
