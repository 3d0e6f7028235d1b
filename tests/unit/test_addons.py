"""The addons (metrics-server, local-path storage, Headlamp) under mocks, their manifests and
kustomizations, their stage scripts against a stand-in kubectl, and their bad config."""

from __future__ import annotations

import json
import re
import shlex
import typing

import yaml
import pytest

from components import addons
from components.addons import HEADLAMP_ROLES
from components.config import parse
from components.config_schema import HeadlampAccess
from tests.conftest import with_keys
from tests.program import FAKE_LOGIN_TOKEN, PROJECT_DIR, load_stack_config, run_program
from tests.unit.test_config_validation import problems
from tests.unit.test_scripts import run_against_kubectl

ADDONS = ("k8s-metrics-server", "k8s-local-path", "k8s-headlamp")


@pytest.fixture
def single_config(ssh_keys) -> dict:
    return with_keys(load_stack_config("single"), ssh_keys)


def settings_of(config: dict, stack: str = "dev", **addon_keys):
    return parse({**config, "addons": {**config.get("addons", {}), **addon_keys}}, stack, PROJECT_DIR)


def test_dev_installs_metrics_and_storage_after_every_node_is_ready_and_no_dashboard(dev_config):
    run = run_program(dev_config)
    assert run.error is None, run.error
    ready, leader_vm = run.by_name("k8s-ready"), run.by_name("k8s-k8smaster-node-domain")
    for name in ADDONS[:2]:
        addon = run.by_name(name)
        assert ready.urn in addon.dependencies, addon.urn
        assert addon.param("ADDON_DIR") == f"/etc/kvm-kubeadm/{name.removeprefix('k8s-')}", addon.urn
        # Turned off later, it removes what it applied; not when the whole cluster goes.
        assert "readonly STAGE=remove-addon" in addon.inputs["delete"], addon.urn
        assert addon.deleted_with == leader_vm.urn, addon.urn
    assert not [r for r in run.stage_commands() if r.name == "k8s-headlamp"]
    assert "headlampToken" not in run.exports


def test_every_addon_switched_off_leaves_no_addon_stage(dev_config):
    run = run_program({**dev_config, "addons": {"metricsServer": False, "localPath": False}})
    assert run.error is None, run.error
    assert not {r.name for r in run.stage_commands()} & set(ADDONS)


def test_single_shows_the_dashboard_with_a_secret_token_and_the_command_that_opens_it(single_config):
    run = run_program(single_config, stack="single")
    assert run.error is None, run.error
    headlamp = run.by_name("k8s-headlamp")
    assert {"stdout", "stderr"} <= set(headlamp.additional_secret_outputs) and headlamp.inputs["logging"] == "none"
    assert run.resolve(run.exports["headlampToken"]) == (FAKE_LOGIN_TOKEN, True)
    command, secret = run.resolve(run.exports["headlampCommand"])
    assert not secret and FAKE_LOGIN_TOKEN not in command
    assert command.endswith("kubectl --kubeconfig ~/.kube/kvm-single.conf -n headlamp port-forward service/headlamp 4466:4466")
    assert "umask 077 && pulumi stack output kubeconfig --show-secrets > ~/.kube/kvm-single.conf" in command
    assert run.resolve(run.exports["headlampUrl"]) == ("http://localhost:4466/", False)


def test_a_node_port_dashboard_is_opened_at_the_node_and_needs_no_command(single_config):
    run = run_program({**single_config, "addons": {"headlamp": True, "headlampNodePort": 30466}}, stack="single")
    assert run.error is None, run.error
    assert run.resolve(run.exports["headlampUrl"]) == ("http://192.168.57.107:30466/", False)
    assert "headlampCommand" not in run.exports
    service = next(d for d in yaml.safe_load_all(run.by_name("k8s-headlamp").param("MANIFEST")) if d["kind"] == "Service")
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30466


def test_metrics_server_skips_kubelet_certificate_checks_and_keeps_upstreams_image_by_default(dev_config):
    kustomization = yaml.safe_load(addons.metrics_server_kustomization(settings_of(dev_config)))
    (patch,) = kustomization["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "metrics-server"}
    assert yaml.safe_load(patch["patch"]) == [
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--kubelet-insecure-tls"}
    ]
    assert "images" not in kustomization and kustomization["resources"] == ["components.yaml"]


def test_the_cn_preset_takes_metrics_server_from_its_image_repository(dev_config):
    settings = parse({**dev_config, "mirrors": "cn"}, "dev", PROJECT_DIR)
    kustomization = yaml.safe_load(addons.metrics_server_kustomization(settings))
    assert kustomization["images"] == [{
        "name": "registry.k8s.io/metrics-server/metrics-server",
        "newName": "registry.aliyuncs.com/google_containers/metrics-server",
    }]


def test_local_path_is_the_default_class_keeping_volumes_in_the_configured_directory(dev_config):
    settings = settings_of(dev_config, localPathDir="/srv/volumes", localPathVersion="v0.0.31")
    kustomization = yaml.safe_load(addons.local_path_kustomization(settings))
    assert kustomization["resources"] == ["local-path-storage.yaml"]
    storage_class, config_map = (yaml.safe_load(p["patch"]) for p in kustomization["patches"])
    assert storage_class["metadata"] == {"name": "local-path", "annotations": {addons.DEFAULT_CLASS: "true"}}
    config = json.loads(config_map["data"]["config.json"])  # the provisioner reads JSON
    assert config == {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/srv/volumes"]}]}
    # The helper pod runs the provisioner's own pinned image, not an unpinned busybox.
    helper = yaml.safe_load(config_map["data"]["helperPod.yaml"])
    assert [c["image"] for c in helper["spec"]["containers"]] == ["rancher/local-path-provisioner:v0.0.31"]
    assert addons.local_path_manifest_url(settings).endswith("/v0.0.31/deploy/local-path-storage.yaml")


def headlamp_by_kind(settings) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for document in addons.headlamp_documents(settings):
        found.setdefault(document["kind"], []).append(document)
    return found


def test_the_read_only_dashboard_reads_everything_but_secrets(single_config):
    documents = headlamp_by_kind(settings_of(single_config, "single"))
    bindings = {b["metadata"]["name"]: b["roleRef"]["name"] for b in documents["ClusterRoleBinding"]}
    assert bindings == {"headlamp-login:view": "view", f"headlamp-login:{addons.HEADLAMP_CLUSTER_READER}": addons.HEADLAMP_CLUSTER_READER}
    (reader,) = documents["ClusterRole"]
    assert {verb for rule in reader["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    resources = {r for rule in reader["rules"] for r in rule["resources"]}
    assert "nodes" in resources and "secrets" not in resources and "*" not in resources
    (token,) = documents["Secret"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": addons.HEADLAMP_LOGIN}
    (deployment,) = documents["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/headlamp-k8s/headlamp:v0.35.0" and "-in-cluster" in container["args"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "headlamp"  # no rights of its own


def test_every_access_level_the_config_takes_has_its_roles():
    assert set(HEADLAMP_ROLES) == set(typing.get_args(HeadlampAccess))


def test_cluster_admin_access_is_explicit_and_a_change_of_level_removes_the_other_bindings(single_config):
    admin = headlamp_by_kind(settings_of(single_config, "single", headlampAccess="cluster-admin"))
    assert [(b["metadata"]["name"], b["roleRef"]["name"]) for b in admin["ClusterRoleBinding"]] == [
        ("headlamp-login:cluster-admin", "cluster-admin")
    ]
    assert addons.headlamp_stale_bindings("cluster-admin") == sorted(addons.headlamp_bindings("read-only"))
    assert addons.headlamp_stale_bindings("read-only") == ["headlamp-login:cluster-admin"]


@pytest.mark.parametrize("keys, key, words", [
    ({"dashboard": True}, "kvm-kubeadm:addons.dashboard", "unknown key (known keys: headlamp, headlampAccess"),
    ({"localPathDir": "data/volumes"}, "kvm-kubeadm:addons.localPathDir", "must be an absolute path"),
    ({"localPathDir": "/opt/../etc"}, "kvm-kubeadm:addons.localPathDir", "without '.' or '..' parts"),
    ({"localPathDir": "/"}, "kvm-kubeadm:addons.localPathDir", "is the root directory"),
    ({"localPathDir": "/var/lib/kubelet/volumes"}, "kvm-kubeadm:addons.localPathDir", "lies in /var/lib/kubelet"),
    ({"localPathDir": "/etc"}, "kvm-kubeadm:addons.localPathDir", "lies in /etc"),
    ({"headlampAccess": "admin"}, "kvm-kubeadm:addons.headlampAccess", "must be 'read-only' or 'cluster-admin'"),
    ({"headlampNodePort": 8080}, "kvm-kubeadm:addons.headlampNodePort", "must be between 30000 and 32767"),
    ({"headlampNodePort": 30466}, "kvm-kubeadm:addons.headlampNodePort", "has no effect while kvm-kubeadm:addons.headlamp is false"),
    ({"metricsServerVersion": "0.8.0"}, "kvm-kubeadm:addons.metricsServerVersion", "must be a metrics-server release tag"),
])
def test_each_addon_rule_names_its_key(dev_config, keys, key, words):
    found = problems({**dev_config, "addons": keys})
    assert any(p.startswith(f"{key}:") and words in p for p in found), found


def test_a_dashboard_needs_a_cluster(single_config):
    found = problems({**single_config, "stages": "os-prep", "addons": {"headlamp": True}}, "single")
    assert any(p.startswith("kvm-kubeadm:addons.headlamp: needs a cluster") for p in found), found


def firewall_ports(run, node: str) -> list[str]:
    script = run.by_name(f"k8s-{node}-os-prep").script
    return shlex.split(re.search(r"readonly -a FIREWALL_PORTS=\((.*)\)", script).group(1))


def test_open_ports_opens_the_node_port_range_where_workloads_run_and_the_dashboard_is_found_there(
    single_config, dev_config
):
    node_port = {"firewall": "open-ports", "addons": {"headlamp": True, "headlampNodePort": 30466}}
    single = run_program({**single_config, **node_port}, stack="single")
    assert single.error is None, single.error
    assert {"10256/tcp", "30000:32767/tcp"} <= set(firewall_ports(single, "k8smaster"))
    assert single.resolve(single.exports["headlampUrl"]) == ("http://192.168.57.107:30466/", False)
    # dev's control plane keeps its taint: the range stays closed there, and the URL names a worker.
    dev = run_program({**dev_config, **node_port})
    assert dev.error is None, dev.error
    assert "30000:32767/tcp" not in firewall_ports(dev, "k8smaster")
    assert "30000:32767/tcp" in firewall_ports(dev, "k8sworker1")
    assert dev.resolve(dev.exports["headlampUrl"]) == ("http://192.168.56.123:30466/", False)


def test_addons_need_a_node_to_run_on(single_config):
    config = {**single_config, "controlPlane": {**single_config["controlPlane"], "schedulable": False}}
    found = problems(config, "single")
    assert any(p.startswith("kvm-kubeadm:controlPlane.schedulable: false leaves no node for the addons "
                            "(metricsServer, localPath, headlamp)") for p in found), found
    assert parse({**config, "addons": {"metricsServer": False, "localPath": False, "headlamp": False}}, "single", PROJECT_DIR)


def test_bad_addon_config_registers_nothing(dev_config):
    run = run_program({**dev_config, "addons": {"localPathDir": "relative", "headlampNodePort": 1}})
    assert run.error is not None and run.registrations == []
    assert "addons.localPathDir" in str(run.error) and "addons.headlampNodePort" in str(run.error)


# Applies and waits succeed; the login token Secret is filled on the second look; deleted
# bindings and applied files are logged.
FAKE_KUBECTL_FOR_ADDONS = """#!/bin/bash
echo "$*" >>"$FAKE_KUBECTL_LOG"
case "$*" in
  *'jsonpath={.data.token}'*)
    if (( $(grep -c 'data.token' "$FAKE_KUBECTL_LOG") > 1 )); then printf 'c2VjcmV0LXRva2Vu'; fi ;;
  *'get persistentvolumes'*) printf '%s' "${FAKE_VOLUMES:-}" ;;
  *) echo "kubectl: $*" ;;
esac
"""


def test_the_headlamp_stage_prints_only_the_login_token_on_stdout(tmp_path, single_config):
    settings = settings_of(single_config, "single", headlampAccess="cluster-admin")
    params = {
        "ADDON_DIR": str(tmp_path / "headlamp"), "TIMEOUT_SECONDS": 60, "MANIFEST": addons.headlamp_manifest(settings),
        "MANIFEST_FILE": addons.HEADLAMP_FILE, "KUSTOMIZATION": addons.headlamp_kustomization(),
        "NAMESPACE": addons.HEADLAMP_NAMESPACE, "TOKEN_SECRET": addons.HEADLAMP_TOKEN_SECRET,
        "STALE_BINDINGS": addons.headlamp_stale_bindings("cluster-admin"),
    }
    result = run_against_kubectl(tmp_path, "headlamp", params, FAKE_KUBECTL_FOR_ADDONS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "secret-token"
    calls = (tmp_path / "kubectl").read_text()
    assert f"delete clusterrolebinding --ignore-not-found {' '.join(sorted(addons.headlamp_bindings('read-only')))}" in calls
    assert f"apply -k {tmp_path / 'headlamp'}" in calls
    applied = yaml.safe_load_all((tmp_path / "headlamp" / addons.HEADLAMP_FILE).read_text())
    assert {d["kind"] for d in applied} >= {"Deployment", "Service", "ServiceAccount", "Secret", "ClusterRoleBinding"}


@pytest.mark.parametrize("volumes, removed", [("", True), ("pvc-1234\n", False)])
def test_storage_is_removed_only_once_no_volume_uses_it(tmp_path, volumes, removed):
    directory = tmp_path / "local-path"
    directory.mkdir()
    (directory / "kustomization.yaml").write_text("resources: [local-path-storage.yaml]\n")
    params = {"ADDON_DIR": str(directory), "TIMEOUT_SECONDS": 60, "STORAGE_CLASS": "local-path"}
    result = run_against_kubectl(tmp_path, "remove-addon", params, FAKE_KUBECTL_FOR_ADDONS, FAKE_VOLUMES=volumes)
    calls = (tmp_path / "kubectl").read_text()
    if removed:
        assert result.returncode == 0 and f"delete -k {directory} --ignore-not-found" in calls, result.stderr
        assert not directory.exists()
    else:
        assert result.returncode != 0 and "delete -k" not in calls and directory.exists()
        assert "StorageClass local-path still backs these volumes: pvc-1234" in result.stderr
