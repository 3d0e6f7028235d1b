"""The procedure's declaration itself: each role's stages are well formed, and a
stage added to a role becomes one more Command and nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from components import procedure
from components.stage import SCOPES, Stage, in_scope
from tests.conftest import with_keys
from tests.program import load_stack_config, run_program

PROVIDED = {
    procedure.VM, procedure.BOOTSTRAP_TOKEN, procedure.JOIN_PREREQUISITES, procedure.POD_NETWORK, procedure.JOINED_NODES,
    procedure.KUBERNETES_VERSION, procedure.ROLLOUT_TURN, procedure.CONTROL_PLANE_TURN, procedure.CERTIFICATES,
}


@pytest.mark.parametrize("role", sorted(procedure.ROLES))
def test_each_stage_waits_only_for_earlier_stages_or_what_its_role_provides(role):
    earlier: dict[str, Stage] = {}
    for stage in procedure.ROLES[role]:
        assert stage.name not in earlier, f"{role}: {stage.name} declared twice"
        assert stage.scope in SCOPES, f"{role}: {stage.name}"
        for name in stage.after:
            assert name in earlier or name in PROVIDED, f"{role}: {stage.name} waits for unknown {name!r}"
            if name in earlier:
                # A stage in a narrower scope cannot wait for one that scope leaves out.
                assert in_scope(earlier[name].scope, stage.scope), f"{role}: {stage.name} after {name}"
        earlier[stage.name] = stage


def test_the_join_ticket_is_made_of_declared_control_plane_stages():
    names = [stage.name for stage in procedure.CONTROL_PLANE]
    assert set(procedure.JOIN_NEEDS) <= set(names)


def test_an_os_prep_stack_runs_exactly_the_os_prep_stages(dev_config):
    run = run_program({**dev_config, "stages": "os-prep"})
    assert run.error is None, run.error
    prefixes = {"control plane": ["k8s-k8smaster"], "joining control plane": [],
                "worker": [f"k8s-k8sworker{i}" for i in (1, 2, 3)], "cluster": ["k8s"]}
    expected = {
        f"{prefix}-{stage.name}"
        for role, stages in procedure.ROLES.items()
        for prefix in prefixes[role]
        for stage in stages
        if stage.scope == "os-prep"
    }
    assert expected and {command.name for command in run.stage_commands()} == expected


def test_adding_a_stage_is_one_entry(monkeypatch, ssh_keys):
    addon = Stage("kubeconfig-copy", after=("cni",), params=lambda c: {"TARGET": "/root/.kube/config"})
    monkeypatch.setattr(procedure, "CONTROL_PLANE", (*procedure.CONTROL_PLANE, addon))
    # render() reads scripts/<name>.sh: borrow an existing script's text for the test.
    from components import scripts

    original = scripts.render
    monkeypatch.setattr("components.stage.render", lambda stage, host, params=None: original(
        "kubeconfig" if stage == addon.name else stage, host, params))
    run = run_program(with_keys(load_stack_config("dev"), ssh_keys))
    assert run.error is None, run.error
    added = run.by_name("k8s-k8smaster-kubeconfig-copy")
    assert run.by_name("k8s-k8smaster-cni").urn in added.dependencies
    assert added.param("TARGET") == "/root/.kube/config"


def test_a_stage_waiting_for_something_unknown_is_refused(monkeypatch, ssh_keys):
    broken = dataclasses.replace(procedure.WORKER[-1], after=("no-such-stage",))
    monkeypatch.setattr(procedure, "WORKER", (*procedure.WORKER[:-1], broken))
    run = run_program(with_keys(load_stack_config("dev"), ssh_keys))
    assert isinstance(run.error, ValueError) and "no-such-stage" in str(run.error)
