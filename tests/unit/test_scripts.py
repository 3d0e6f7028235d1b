"""Rendered stage scripts: shellcheck, bash -n, and the logic that can run here."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components import kubeadm, procedure
from components.config import parse
from components.procedure import packages_params
from components.scripts import SCRIPTS_DIR, render
from components.stage import in_scope
from tests.conftest import with_keys
from tests.program import DYNAMIC, HIGHLY_AVAILABLE, LOCAL_COMMAND, PROJECT_DIR, load_stack_config, run_program

DATA = Path(__file__).resolve().parents[1] / "data"
STAGES = sorted(p.stem for p in SCRIPTS_DIR.glob("*.sh") if p.name != "lib.sh")


@pytest.fixture(scope="module")
def dev_settings(ssh_keys):
    return parse(with_keys(load_stack_config("dev"), ssh_keys), "dev", PROJECT_DIR)


@pytest.fixture(scope="module")
def rendered_scripts(ssh_keys, tmp_path_factory) -> dict[str, str]:
    """Every script the dev stack sends with three control planes behind a VIP, every addon, snapshots (a restore
    too) and the prepared image on, keyed by resource and field (or build step), unwrapped from `sudo bash -c`."""
    config = with_keys(load_stack_config("dev"), ssh_keys)
    archive = tmp_path_factory.mktemp("snapshots") / "20261207T000000Z.etcd-snapshot.tar"
    archive.write_bytes(b"")
    run = run_program({**config, **HIGHLY_AVAILABLE, "addons": {"headlamp": True},
                       "snapshots": {"everyUp": True, "restoreFrom": str(archive)},
                       "image": {**config.get("image", {}), "prepared": True}})
    assert run.error is None, run.error
    lines = {}
    for command in run.stage_commands():
        for field in ("create", "update", "delete"):
            line = command.inputs.get(field)
            if line:
                if command.type == LOCAL_COMMAND:  # `… ssh … user@node 'sudo -n bash -c …' …`
                    words = shlex.shlex(line, posix=True, punctuation_chars=True)
                    words.whitespace_split = True
                    line = next(word for word in words if word.startswith("sudo -n bash -c "))
                lines[f"{command.name}.{field}"] = line
    (image,) = [r for r in run.registrations if r.type == DYNAMIC and r.name.endswith("-prepared-image")]
    lines.update({f"{image.name}.{index}": line for index, line in enumerate(image.inputs["scripts"])})
    (certificates,) = [r for r in run.registrations if r.type == DYNAMIC and r.name.endswith("-certificate-expiry")]
    lines.update({f"{certificates.name}.{node['name']}.{step}": node[step]
                  for node in certificates.inputs["nodes"] for step in ("check", "renew")})
    (snapshot,) = [r for r in run.registrations if r.type == DYNAMIC and r.name.endswith("-etcd-snapshot")]
    lines[snapshot.name] = snapshot.inputs["command"]
    scripts = {}
    for key, line in lines.items():
        argv = shlex.split(line)
        assert argv[:4] == ["sudo", "-n", "bash", "-c"] and len(argv) == 5, key
        scripts[key] = argv[4]
    return scripts


def declared_scripts(scope: str = "kubernetes") -> set[str]:
    """Every script the procedure runs in `scope`: stages that create, and undo scripts."""
    stages = [stage for role in procedure.ROLES.values() for stage in role if in_scope(stage.scope, scope)]
    build = {step.script for step in procedure.PREPARED_IMAGE_BUILD if in_scope(step.scope, scope)}
    # Run by dynamic providers over ssh.
    by_providers = {procedure.CERTIFICATES, procedure.ETCD_SNAPSHOT} if in_scope("kubernetes", scope) else set()
    return {s.script_name for s in stages if s.creates} | {s.undo.script for s in stages if s.undo} | build | by_providers


def test_every_stage_file_is_declared_by_the_procedure():
    assert declared_scripts() == set(STAGES)


def test_the_dev_stack_sends_every_script_of_its_scope(rendered_scripts, dev_settings):
    sent = {s.split("readonly STAGE=")[1].split("\n")[0] for s in rendered_scripts.values()}
    assert sent == declared_scripts(dev_settings.scope)


def test_every_stage_file_starts_strict():
    assert STAGES
    for stage in STAGES:
        text = (SCRIPTS_DIR / f"{stage}.sh").read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), stage
        assert "\nset -euo pipefail\n" in text, stage


def test_rendered_scripts_pass_bash_n(rendered_scripts, tmp_path):
    assert len(rendered_scripts) == 93
    for key, script in rendered_scripts.items():
        result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{key}: {result.stderr}"


def test_rendered_scripts_pass_shellcheck(rendered_scripts, tmp_path):
    assert shutil.which("shellcheck"), "shellcheck is required (apt-get install shellcheck)"
    paths = []
    for key, script in sorted(rendered_scripts.items()):
        path = tmp_path / f"{key}.sh"
        path.write_text(script)
        paths.append(str(path))
    result = subprocess.run(["shellcheck", "--severity=style", *paths], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_no_script_uses_the_shut_down_apt_repo():
    for path in SCRIPTS_DIR.glob("*.sh"):
        assert "apt.kubernetes.io" not in path.read_text(), path.name


def test_kube_repo_path_holds_major_minor_only(dev_settings):
    params = packages_params(dev_settings)
    assert params["KUBE_REPO"] == "https://pkgs.k8s.io/core:/stable:/v1.36/deb/"
    assert params["KUBE_VERSION"] == "1.36.3"


def source_and_run(script: str, call: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "stage.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {shlex.quote(str(path))}; {call}"],
        env={"KVMK_SOURCE_ONLY": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )


@pytest.mark.parametrize(
    "sample, version, runc_path, image_path, registry_path",
    [
        (
            "containerd-1.x-style.toml",
            2,
            ["plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "runc", "options", "SystemdCgroup"],
            ["plugins", "io.containerd.grpc.v1.cri", "sandbox_image"],
            ["plugins", "io.containerd.grpc.v1.cri", "registry", "config_path"],
        ),
        (
            "containerd-2.x-style.toml",
            3,
            ["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options", "SystemdCgroup"],
            ["plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"],
            ["plugins", "io.containerd.cri.v1.images", "registry", "config_path"],
        ),
        (
            "containerd-2.x-style.toml",  # containerd 2.3+ writes version 4 with the same CRI tables
            4,
            ["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options", "SystemdCgroup"],
            ["plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"],
            ["plugins", "io.containerd.cri.v1.images", "registry", "config_path"],
        ),
    ],
)
def test_containerd_edit_sets_systemd_cgroup_pause_image_and_registry_hosts(
    dev_settings, tmp_path, sample, version, runc_path, image_path, registry_path
):
    config = tmp_path / "config.toml"
    original_text = (DATA / sample).read_text().replace("version = 3", f"version = {version}")
    config.write_text(original_text)
    script = render("packages", "k8smaster", packages_params(dev_settings))
    pause = "registry.example.test/mirror/pause:3.10"
    call = f"configure_containerd {shlex.quote(str(config))} {pause}"
    result = source_and_run(script, call, tmp_path)
    assert result.returncode == 0, result.stderr
    first = config.read_text()

    def lookup(document, path):
        for key in path:
            document = document[key]
        return document

    parsed = tomllib.loads(first)
    assert lookup(parsed, runc_path) is True
    assert lookup(parsed, image_path) == pause
    assert lookup(parsed, registry_path) == "/etc/containerd/certs.d"
    # Idempotent: a second edit changes nothing.
    assert source_and_run(script, call, tmp_path).returncode == 0
    assert config.read_text() == first
    # Nothing else was lost.
    original = tomllib.loads(original_text)
    assert parsed["version"] == version == original["version"] and parsed["root"] == original["root"]


def test_containerd_edit_refuses_an_unknown_layout(dev_settings, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("root = '/var/lib/containerd'\n")
    script = render("packages", "k8smaster", packages_params(dev_settings))
    result = source_and_run(script, f"configure_containerd {config} pause:1", tmp_path)
    assert result.returncode != 0 and "unsupported containerd config version" in result.stderr


def test_ca_hash_recipe_is_sha256_of_the_public_key_info(tmp_path):
    key, cert = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=kubernetes", "-days", "1"],
        check=True, capture_output=True,
    )
    result = source_and_run(render("ca-hash", "k8smaster", {"CA_CERT": str(cert)}), f"ca_hash {cert}", tmp_path)
    assert result.returncode == 0, result.stderr
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], check=True, capture_output=True
    ).stdout
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der, check=True, capture_output=True).stdout
    import hashlib

    assert result.stdout.strip() == "sha256:" + hashlib.sha256(spki).hexdigest()


def test_redact_hides_tokens_and_hashes(dev_settings, tmp_path):
    script = render("join", "k8sworker1")
    result = source_and_run(
        script, "printf 'token abcdef.0123456789abcdef hash sha256:%s\\n' $(printf 'a%.0s' {1..64}) | redact", tmp_path
    )
    assert result.stdout.strip() == "token <token> hash sha256:<hash>"


def test_init_config_carries_the_stack_settings(dev_settings):
    documents = list(yaml.safe_load_all(kubeadm.init_config(dev_settings, "abcdef.0123456789abcdef")))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"}
    assert all(d["apiVersion"] == "kubeadm.k8s.io/v1beta4" for d in documents if d["kind"] != "KubeletConfiguration")
    init, cluster, kubelet = kinds["InitConfiguration"], kinds["ClusterConfiguration"], kinds["KubeletConfiguration"]
    assert init["localAPIEndpoint"]["advertiseAddress"] == "192.168.56.107"
    assert init["bootstrapTokens"][0]["token"] == "abcdef.0123456789abcdef"
    assert init["bootstrapTokens"][0]["ttl"] == "24h0m0s" and "expires" not in init["bootstrapTokens"][0]
    assert init["nodeRegistration"]["name"] == "k8smaster"
    assert "taints" not in init["nodeRegistration"], "the dev control plane keeps its taint"
    assert cluster["networking"] == {"serviceSubnet": "10.96.0.0/12", "podSubnet": "10.244.0.0/16"}
    assert cluster["imageRepository"] == "registry.k8s.io"
    assert cluster["kubernetesVersion"] == "v1.36.3"
    assert cluster["controlPlaneEndpoint"] == "192.168.56.107:6443"
    assert kubelet == {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration", "cgroupDriver": "systemd"}


def settings_with(ssh_keys, **kubernetes):
    config = with_keys(load_stack_config("dev"), ssh_keys)
    config["kubernetes"] = {**config["kubernetes"], **kubernetes}
    return parse(config, "dev", PROJECT_DIR)


def test_raised_waits_reach_the_control_plane_components(ssh_keys):
    def cluster_configuration(**kubernetes) -> dict:
        documents = kubeadm.init_documents(settings_with(ssh_keys, **kubernetes))
        return next(d for d in documents if d["kind"] == "ClusterConfiguration")

    lease = [{"name": "leader-elect-renew-deadline", "value": "60s"}, {"name": "leader-elect-lease-duration", "value": "90s"}]
    raised = cluster_configuration(leaderElectionRenewDeadlineSeconds=60)
    assert raised["controllerManager"] == raised["scheduler"] == {"extraArgs": lease}
    # At Kubernetes' default the components keep kubeadm's own flags.
    assert {"controllerManager", "scheduler", "apiServer"}.isdisjoint(cluster_configuration())
    raised = cluster_configuration(etcdHealthCheckTimeoutSeconds=10)
    assert raised["apiServer"] == {"extraArgs": [{"name": "etcd-healthcheck-timeout", "value": "10s"}]}


def test_slower_probes_become_kubeadm_patches_of_every_static_pod(ssh_keys):
    raised = settings_with(ssh_keys, readinessProbePeriodSeconds=10, livenessProbeFailureThreshold=30)
    patches = {name: yaml.safe_load(text) for name, text in kubeadm.static_pod_patches(raised.kubernetes).items()}
    components = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"]
    assert sorted(patches) == sorted(f"{component}+strategic.yaml" for component in components)
    for component in components:
        (container,) = patches[f"{component}+strategic.yaml"]["spec"]["containers"]
        assert container["name"] == component
        assert container["livenessProbe"] == {"failureThreshold": 30}
        # kube-controller-manager has no readiness probe, and a patch must not add a half one.
        expected_readiness = None if component == "kube-controller-manager" else {"periodSeconds": 10}
        assert container.get("readinessProbe") == expected_readiness, component
    init = kubeadm.init_documents(raised)[0]
    upgrade = yaml.safe_load(kubeadm.upgrade_config(raised.kubernetes))
    assert init["patches"] == upgrade["apply"]["patches"] == {"directory": kubeadm.PATCHES_DIR}
    only_readiness = settings_with(ssh_keys, readinessProbePeriodSeconds=10)
    assert "kube-controller-manager+strategic.yaml" not in kubeadm.static_pod_patches(only_readiness.kubernetes)


def test_kubeadms_own_probes_need_no_patches(dev_settings):
    assert kubeadm.static_pod_patches(dev_settings.kubernetes) == {}
    assert "patches" not in kubeadm.init_documents(dev_settings)[0]
    assert "patches" not in yaml.safe_load(kubeadm.upgrade_config(dev_settings.kubernetes))["apply"]


@pytest.mark.parametrize("stage", ["init", "upgrade-apply"])
def test_the_stage_writes_exactly_the_configured_patches(ssh_keys, tmp_path, stage):
    raised = settings_with(ssh_keys, readinessProbePeriodSeconds=10, livenessProbeFailureThreshold=30)
    directory = tmp_path / "patches"
    stale = directory / "kube-proxy+json.yaml"
    directory.mkdir()
    stale.write_text("left from an earlier config")
    params = {**procedure.static_pod_patches_params(raised), "PATCHES_DIR": str(directory)}
    result = source_and_run(render(stage, "k8smaster", params), 'write_files_into "$PATCHES_DIR" "${PATCHES[@]}"', tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_text() for p in directory.iterdir()} == kubeadm.static_pod_patches(raised.kubernetes)
    unpatched = {**procedure.static_pod_patches_params(settings_with(ssh_keys)), "PATCHES_DIR": str(directory)}
    result = source_and_run(render(stage, "k8smaster", unpatched), 'write_files_into "$PATCHES_DIR" "${PATCHES[@]}"', tmp_path)
    assert result.returncode == 0 and not directory.exists(), result.stderr


def test_what_triggers_init_holds_no_token(dev_settings):
    public = procedure.init_settings(dev_settings)
    assert "bootstrapTokens" not in public and "abcdef" not in public and "podSubnet: 10.244.0.0/16" in public


def test_flannel_patch_sets_the_pod_cidr(dev_settings):
    kustomization = yaml.safe_load(kubeadm.flannel_kustomization(dev_settings))
    assert kustomization["resources"] == ["kube-flannel.yml"]
    (patch,) = kustomization["patches"]
    assert patch["target"] == {"kind": "ConfigMap", "name": "kube-flannel-cfg"}
    (operation,) = yaml.safe_load(patch["patch"])
    assert operation["op"] == "replace" and operation["path"] == "/data/net-conf.json"
    assert json.loads(operation["value"])["Network"] == "10.244.0.0/16"
    assert "images" not in kustomization, "no registry override unless configured"


def test_a_failing_logged_step_shows_its_log_tail_redacted(tmp_path):
    log = tmp_path / "logs" / "step.log"
    failing = "bash -c 'echo joining with abcdef.0123456789abcdef; exit 3'"
    result = source_and_run(render("join", "k8sworker1"), f"run_logged {log} {failing}", tmp_path)
    assert result.returncode != 0
    assert "joining with <token>" in result.stderr and "abcdef.0123456789abcdef" not in result.stderr
    assert "abcdef.0123456789abcdef" in log.read_text(), "the full log stays on the node, root only"
    assert oct(log.parent.stat().st_mode & 0o777) == "0o700"


def test_tool_scripts_pass_shellcheck():
    tools = PROJECT_DIR / "tools"
    scripts = sorted(str(p) for p in [*tools.rglob("*.sh"), PROJECT_DIR / ".ci" / "run"])
    assert len(scripts) >= 6
    # tools/.shellcheckrc lets shellcheck follow `source tools/versions.env`.
    result = subprocess.run(["shellcheck", *scripts], cwd=tools, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


# Each init or join exits with the next code in $FAKE_RCS (one per line), then 0; a join writes
# $FAKE_JOIN_WRITES besides.
FAKE_KUBEADM = """#!/bin/bash
echo "$*" >>"$FAKE_LOG"
if [[ "$1" == init ]]; then
  mkdir -p /etc/kubernetes/manifests && touch /etc/kubernetes/admin.conf /etc/kubernetes/manifests/etcd.yaml
fi
if [[ "$1" == join ]]; then touch /etc/kubernetes/kubelet.conf ${FAKE_JOIN_WRITES:-}; fi
if [[ "$1" == reset ]]; then rm -rf /etc/kubernetes/*.conf /etc/kubernetes/manifests; exit 0; fi
if [[ "$1 $2 $3" == "config images list" ]]; then echo registry.k8s.io/etcd:3.6.8-0; exit 0; fi
rc=$(head -n 1 "$FAKE_RCS"); sed -i 1d "$FAKE_RCS"
if [[ "${rc:-0}" != 0 && -n "${FAKE_FAILS_IN:-}" ]]; then echo "error execution phase $FAKE_FAILS_IN: failed" >&2; fi
exit "${rc:-0}"
"""
# /readyz of the API server answers ok from the $FAKE_API_READY_AFTER-th question on.
FAKE_CURL = """#!/bin/bash
echo "$*" >>"$FAKE_CURL_LOG"
(( $(wc -l <"$FAKE_CURL_LOG") > FAKE_API_READY_AFTER )) && echo ok
"""


def run_kubeadm_stage(tmp_path: Path, stage: str, params: dict, call: str, rcs: list[int], api_ready_after: int = 0,
                      kubectl: str = "", ctr: str = "", stdin: str = "", **env: str):
    """The kubeadm step of stage `stage` on a private /etc and /var (tmpfs in a user and mount
    namespace that keep their state in tmp_path between runs), with stand-ins for kubeadm, curl
    and, given, kubectl."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    for directory in (bin_dir, state / "etc", state / "var"):
        directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("kubeadm", FAKE_KUBEADM), ("curl", FAKE_CURL), ("kubectl", kubectl), ("ctr", ctr)):
        if not text:
            continue
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # awk is a link through /etc/alternatives, which the private /etc hides.
    if not (bin_dir / "awk").exists():
        (bin_dir / "awk").symlink_to(Path(shutil.which("awk")).resolve())
    (tmp_path / "rcs").write_text("".join(f"{rc}\n" for rc in rcs))
    script = tmp_path / f"{stage}.sh"
    script.write_text(render(stage, "k8snode", params))
    inner = (
        f"mount --bind {state / 'etc'} /etc && mount --bind {state / 'var'} /var && "
        f"source {shlex.quote(str(script))} && sleep() {{ :; }} && {call}"
    )
    return subprocess.run(
        ["unshare", "-rm", "bash", "-c", f"set -euo pipefail; {inner}"],
        env={"KVMK_SOURCE_ONLY": "1", "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(tmp_path / "calls"),
             "FAKE_RCS": str(tmp_path / "rcs"), "FAKE_CURL_LOG": str(tmp_path / "curl"),
             "FAKE_API_READY_AFTER": str(api_ready_after), **env},
        input=stdin, capture_output=True, text=True, check=False,
    )


def run_init_attempt(tmp_path: Path, rc: int) -> subprocess.CompletedProcess:
    return run_kubeadm_stage(
        tmp_path, "init", {"SSH_USER": "kube"}, "run_kubeadm_once init --config /etc/kubernetes/kubeadm-init.yaml", [rc]
    )


def kubeadm_calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "calls"
    return [line.split()[0] for line in calls.read_text().splitlines()] if calls.exists() else []


def test_kubeadm_init_runs_once_and_is_skipped_after_it_succeeded(tmp_path):
    first = run_init_attempt(tmp_path, rc=0)
    assert first.returncode == 0, first.stderr
    assert kubeadm_calls(tmp_path) == ["init"]
    again = run_init_attempt(tmp_path, rc=0)
    assert again.returncode == 0 and "done before; skipped" in again.stdout
    assert kubeadm_calls(tmp_path) == ["init"]


def test_a_failed_kubeadm_init_is_retried_from_a_reset_node(tmp_path):
    # kubeadm writes admin.conf and the manifests before it waits for the control plane.
    failed = run_init_attempt(tmp_path, rc=1)
    assert failed.returncode != 0
    assert "'kubeadm init' failed on k8snode; last lines of /var/log/kvm-kubeadm/init.log" in failed.stderr
    retry = run_init_attempt(tmp_path, rc=0)
    assert retry.returncode == 0, retry.stderr
    assert "did not finish; resetting for a clean retry" in retry.stdout
    assert kubeadm_calls(tmp_path) == ["init", "reset", "init"]
    assert run_init_attempt(tmp_path, rc=0).returncode == 0
    assert kubeadm_calls(tmp_path) == ["init", "reset", "init"], "done now: no further kubeadm"


def test_a_node_kubeadm_set_up_without_our_attempt_marker_is_left_alone(tmp_path):
    (tmp_path / "state" / "etc" / "kubernetes").mkdir(parents=True)
    (tmp_path / "state" / "etc" / "kubernetes" / "admin.conf").write_text("apiVersion: v1\n")
    result = run_init_attempt(tmp_path, rc=0)
    assert result.returncode == 0 and "done before; skipped" in result.stdout
    assert kubeadm_calls(tmp_path) == [], "an initialised cluster is never reset"


@pytest.mark.parametrize("rcs, expected_rc, plans", [([1, 1, 0], 0, 3), ([1, 1, 1, 0], 1, 3), ([0], 0, 1)])
def test_the_upgrade_plan_is_asked_up_to_three_times(tmp_path, rcs, expected_rc, plans):
    result = run_kubeadm_stage(tmp_path, "upgrade-apply", {}, "plan_upgrade v1.36.3", rcs)
    assert result.returncode == expected_rc, result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        "upgrade plan v1.36.3 --config /etc/kubernetes/kubeadm-upgrade.yaml"] * plans


def test_upgrade_apply_skips_only_the_health_check_the_plan_ran(dev_settings):
    """kubeadm's Job check (fixed 60 s) runs in both plan and apply; the stage asks the plan again
    while it fails, so apply, moments later, need not take the same chance. Plan and node keep every check."""
    upgrade = yaml.safe_load(kubeadm.upgrade_config(dev_settings.kubernetes))
    assert upgrade["apply"]["ignorePreflightErrors"] == ["CreateJob"]
    assert "plan" not in upgrade and "node" not in upgrade


def run_join(tmp_path: Path, rcs: list[int], timeout: int = 300, api_ready_after: int = 0):
    params = {"API_URL": "https://192.168.56.10:6443", "TIMEOUT_SECONDS": timeout}
    return run_kubeadm_stage(tmp_path, "join", params, "main", rcs, api_ready_after)


def test_a_join_waits_for_the_api_server_and_retries_a_failed_attempt_from_a_reset_node(tmp_path):
    """Seen on a real cluster: the control plane restarted its API server while a worker joined,
    and kubeadm's preflight (a 350 ms retry) failed at once."""
    result = run_join(tmp_path, rcs=[1, 0], api_ready_after=2)
    assert result.returncode == 0, result.stderr
    assert kubeadm_calls(tmp_path) == ["join", "reset", "join"]
    assert "kubeadm join attempt 1 of 3 failed; trying again once the API server is ready" in result.stdout
    curls = (tmp_path / "curl").read_text().splitlines()
    assert len(curls) == 4 and all(line.endswith(" https://192.168.56.10:6443/readyz") for line in curls), curls


def test_a_join_gives_up_after_three_attempts(tmp_path):
    result = run_join(tmp_path, rcs=[1, 1, 1])
    assert result.returncode != 0
    assert kubeadm_calls(tmp_path) == ["join", "reset", "join", "reset", "join"]
    assert "'kubeadm join' failed on k8snode" in result.stderr


def test_a_join_that_used_up_the_join_timeout_is_not_retried(tmp_path):
    # A wrong token: discovery waits out the whole timeout, and trying again cannot help.
    result = run_join(tmp_path, rcs=[1], timeout=0)
    assert result.returncode != 0 and kubeadm_calls(tmp_path) == ["join"]


def test_a_join_does_not_start_without_a_ready_api_server(tmp_path):
    result = run_join(tmp_path, rcs=[], timeout=0, api_ready_after=99)
    assert result.returncode != 0 and kubeadm_calls(tmp_path) == []
    assert "the API server at https://192.168.56.10:6443 is not ready after 0s" in result.stderr


def test_a_joined_worker_is_skipped(tmp_path):
    assert run_join(tmp_path, rcs=[0]).returncode == 0
    again = run_join(tmp_path, rcs=[])
    assert again.returncode == 0 and "kubeadm join done before; skipped" in again.stdout
    assert kubeadm_calls(tmp_path) == ["join"]


# etcdctl through `kubectl exec`, logged with kubeadm's calls: the leader's member and $FAKE_MEMBER;
# with $FAKE_ETCD_DOWN set, etcd does not answer, and it answers only the member lists after the first
# $FAKE_ETCD_SLOW_FOR. Every node is Ready.
FAKE_KUBECTL_FOR_ETCD = """#!/bin/bash
echo "kubectl $*" >>"$FAKE_LOG"
case "$*" in
  *'type=="Ready"'*) echo True ;;
  *'member list'*) [[ -z "${FAKE_ETCD_DOWN:-}" ]] || exit 1
    (( $(grep -c 'member list' "$FAKE_LOG") > ${FAKE_ETCD_SLOW_FOR:-0} )) || exit 1
    echo "8e9e05c52164694d, started, k8smaster, https://192.168.56.107:2380, https://192.168.56.107:2379, false"
    echo "$FAKE_MEMBER" ;;
esac
"""
# Added by an unfinished join: a learner that never started has no name yet.
UNSTARTED_MEMBER = "91bc3c398fb3c146, unstarted, , https://192.168.56.108:2380, , true"


def run_control_plane_join(tmp_path: Path, rcs: list[int], timeout: int = 300, etcd_answer_seconds: int = 0, **env: str):
    params = {"API_URL": "https://192.168.56.100:8443", "TIMEOUT_SECONDS": timeout, "LEADER": "k8smaster",
              "ETCD_PEER_URL": "https://192.168.56.108:2380", "ETCD_ANSWER_SECONDS": etcd_answer_seconds}
    env = {"FAKE_JOIN_WRITES": "/etc/kubernetes/admin.conf", "FAKE_MEMBER": UNSTARTED_MEMBER, **env}
    return run_kubeadm_stage(tmp_path, "join-control-plane", params, "main", rcs, kubectl=FAKE_KUBECTL_FOR_ETCD, **env)


def test_a_failed_control_plane_join_takes_its_etcd_member_and_node_out_before_the_reset(tmp_path):
    """Seen on a real run: kubeadm reset deleted the data of a voting member it could not remove,
    and the two-member etcd lost its quorum."""
    result = run_control_plane_join(tmp_path, rcs=[1, 0])
    assert result.returncode == 0, result.stderr
    assert kubeadm_calls(tmp_path) == ["join", "kubectl", "kubectl", "kubectl", "reset", "join"]
    left = [line for line in (tmp_path / "calls").read_text().splitlines() if line.startswith("kubectl")]
    assert "exec etcd-k8smaster -- etcdctl" in left[0] and left[0].endswith(" member list")
    assert left[1].endswith(" member remove 91bc3c398fb3c146") and left[2] == "kubectl delete node k8snode --ignore-not-found"
    logs = tmp_path / "state" / "var" / "log" / "kvm-kubeadm"
    assert (logs / "join-control-plane.log.failed").exists(), "the failed attempt's log is kept"


def test_a_control_plane_whose_etcd_member_cannot_leave_is_not_reset(tmp_path):
    failed = run_control_plane_join(tmp_path, rcs=[1], timeout=0)
    assert failed.returncode != 0 and kubeadm_calls(tmp_path) == ["join"]
    # The next `up`, with the cluster's etcd not answering: the node keeps its member's data.
    retry = run_control_plane_join(tmp_path, rcs=[0], FAKE_ETCD_DOWN="1")
    assert retry.returncode != 0
    assert "etcd member did not leave the cluster; not resetting it" in retry.stderr
    assert kubeadm_calls(tmp_path) == ["join", "kubectl"]


def test_a_control_plane_join_that_failed_in_etcd_join_goes_on_from_there_without_a_reset(tmp_path):
    """Seen on a real run: kubeadm's etcd-join gave up on a 2 s member list while its learner went on joining."""
    result = run_control_plane_join(tmp_path, rcs=[1, 1, 0], FAKE_FAILS_IN="etcd-join")
    assert result.returncode == 0, result.stderr
    resumed = "join --config /etc/kubernetes/kubeadm-join.yaml --skip-phases=preflight,control-plane-prepare,check-etcd,kubelet-start"
    assert (tmp_path / "calls").read_text().splitlines() == ["join --config /etc/kubernetes/kubeadm-join.yaml", resumed, resumed]
    assert result.stdout.count("failed in etcd-join; kubeadm join goes on from there") == 2
    again = run_control_plane_join(tmp_path, rcs=[])
    assert again.returncode == 0 and "kubeadm join done before; skipped" in again.stdout


def test_a_control_plane_join_that_failed_after_etcd_join_leaves_the_cluster_and_starts_again(tmp_path):
    # etcd answers the third member list only: it is asked again while ETCD_ANSWER_SECONDS last.
    result = run_control_plane_join(tmp_path, rcs=[1, 0], FAKE_FAILS_IN="wait-control-plane", FAKE_ETCD_SLOW_FOR="2",
                                    etcd_answer_seconds=60)
    assert result.returncode == 0, result.stderr
    assert kubeadm_calls(tmp_path) == ["join", *["kubectl"] * 5, "reset", "join"]
    assert (tmp_path / "calls").read_text().count(" member remove 91bc3c398fb3c146") == 1


def test_a_control_plane_join_that_failed_before_its_kubeconfig_is_reset_without_asking_etcd(tmp_path):
    result = run_control_plane_join(tmp_path, rcs=[1, 0], FAKE_JOIN_WRITES="")
    assert result.returncode == 0, result.stderr
    assert kubeadm_calls(tmp_path) == ["join", "reset", "join"]


def test_a_joined_control_plane_is_skipped(tmp_path):
    assert run_control_plane_join(tmp_path, rcs=[0]).returncode == 0
    again = run_control_plane_join(tmp_path, rcs=[])
    assert again.returncode == 0 and "kubeadm join done before; skipped" in again.stdout
    assert kubeadm_calls(tmp_path) == ["join"]


@pytest.mark.parametrize("etcd_down, rc, calls", [
    ("", 0, ["drain k8smaster2", "-n kube-system exec etcd-k8smaster --", "-n kube-system exec etcd-k8smaster --",
             "delete node k8smaster2"]),
    # Without its member removed, the Node stays, and the removal can be run again.
    ("1", 1, ["drain k8smaster2", "-n kube-system exec etcd-k8smaster --"]),
])
def test_removing_a_control_plane_removes_its_etcd_member_by_its_peer_url_then_its_node(tmp_path, etcd_down, rc, calls):
    params = {"TARGET_NODE": "k8smaster2", "LEADER": "k8smaster", "ETCD_PEER_URL": "https://192.168.56.108:2380",
              "ETCD_ANSWER_SECONDS": 0, "DRAIN_TIMEOUT_SECONDS": 300}
    removal = run_against_kubectl(tmp_path, "remove-control-plane", params, FAKE_KUBECTL_FOR_ETCD,
                                  FAKE_LOG=str(tmp_path / "kubectl"), FAKE_MEMBER=UNSTARTED_MEMBER, FAKE_ETCD_DOWN=etcd_down)
    assert removal.returncode == rc, removal.stderr
    acting = [line.removeprefix("kubectl ") for line in (tmp_path / "kubectl").read_text().splitlines()
              if "Ready" not in line and not line.startswith("kubectl get node")]
    assert len(acting) == len(calls) and all(map(str.startswith, acting, calls)), acting
    if not rc:
        assert acting[2].endswith(" member remove 91bc3c398fb3c146")


# containerd's client, logged with kubeadm's calls: etcd's image is there, and etcdutl's restore makes a data directory.
FAKE_CTR = """#!/bin/bash
echo "ctr $*" >>"$FAKE_LOG"
case "$*" in
  *'images list'*) echo registry.k8s.io/etcd:3.6.8-0 ;;
  *'snapshot restore'*) mkdir -p /var/lib/etcd/member ;;
esac
"""
RESTORE_CONFIG = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n"


def snapshot_archive(path: Path, db: str = "etcd data", digest: str = "") -> str:
    """An archive as scripts/etcd-snapshot.sh sends it (text only, so that it travels as a str)."""
    import hashlib
    import io
    import tarfile

    from providers.etcd_snapshot import PKI_FILES

    files = {"etcd.db": db, "etcd.db.sha256": f"{digest or hashlib.sha256(db.encode()).hexdigest()}  etcd.db\n",
             "status.json": '{"revision": 42, "totalKey": 7}', **{f"pki/{name}": f"pem of {name}" for name in PKI_FILES}}
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    return path.read_bytes().decode()


def run_restore(tmp_path: Path, rcs: list[int], **archive: str):
    from components.procedure import etcd_snapshot

    stdin = base64.b64encode(RESTORE_CONFIG.encode()).decode() + "\n" + snapshot_archive(tmp_path / "sent.tar", **archive)
    params = {"PKI_FILES": list(etcd_snapshot.PKI_FILES), "ETCD_PEER_URL": "https://192.168.56.107:2380",
              "PATCHES_DIR": "/etc/kubernetes/kvm-kubeadm-patches", "PATCHES": []}
    return run_kubeadm_stage(tmp_path, "restore", params, "main", rcs, ctr=FAKE_CTR, stdin=stdin)


def test_a_restore_puts_the_pki_and_the_restored_etcd_in_place_then_runs_kubeadm_init_once(tmp_path):
    result = run_restore(tmp_path, rcs=[0])
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    (restore,) = [call for call in calls if "snapshot restore" in call]
    assert "/usr/local/bin/etcdutl snapshot restore /var/lib/kvm-kubeadm-restore/etcd.db --data-dir /var/lib/etcd --name k8snode" in restore
    assert "--initial-cluster k8snode=https://192.168.56.107:2380" in restore
    (init,) = [call for call in calls if call.startswith("init ")]
    assert init == "init --config /etc/kubernetes/kubeadm-init.yaml --ignore-preflight-errors=DirAvailable--var-lib-etcd"
    pki = tmp_path / "state" / "etc" / "kubernetes" / "pki"
    assert (pki / "etcd" / "ca.key").read_text() == "pem of etcd/ca.key"
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600" and oct((pki / "ca.crt").stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "state" / "etc" / "kubernetes" / "kubeadm-init.yaml").read_text() == RESTORE_CONFIG
    assert not (tmp_path / "state" / "var" / "lib" / "kvm-kubeadm-restore").exists(), "the archive goes once restored"
    again = run_restore(tmp_path, rcs=[])
    assert again.returncode == 0 and "this node has a cluster already; not restored" in again.stdout
    assert kubeadm_calls(tmp_path).count("init") == 1


def test_a_failed_restore_is_retried_from_a_reset_node(tmp_path):
    assert run_restore(tmp_path, rcs=[1]).returncode != 0
    retry = run_restore(tmp_path, rcs=[0])
    assert retry.returncode == 0, retry.stderr
    assert "an earlier restore did not finish; resetting for a clean retry" in retry.stdout
    assert [c for c in kubeadm_calls(tmp_path) if c in ("init", "reset")] == ["init", "reset", "init"]


def test_a_damaged_archive_is_refused_before_anything_is_put_in_place(tmp_path):
    result = run_restore(tmp_path, rcs=[0], digest="0" * 64)
    assert result.returncode != 0 and "the snapshot does not match its sha256: a damaged archive" in result.stderr
    assert not (tmp_path / "state" / "etc" / "kubernetes" / "pki").exists()
    assert "init" not in kubeadm_calls(tmp_path)


# The node turns Ready from the $FAKE_READY_AFTER-th question on; its kubelet is v1.36.3, /readyz ok.
FAKE_KUBECTL = """#!/bin/bash
echo "$*" >>"$FAKE_KUBECTL_LOG"
case "$*" in
  *kubeletVersion*) echo v1.36.3 ;;
  *'type=="Ready"'*) (( $(grep -c Ready "$FAKE_KUBECTL_LOG") >= FAKE_READY_AFTER )) && echo True || echo False ;;
  *readyz*) echo ok ;;
esac
"""


def run_against_kubectl(tmp_path: Path, stage: str, params: dict, kubectl: str, **env: str) -> subprocess.CompletedProcess:
    """Stage `stage` on the control plane against the stand-in `kubectl` (which logs its calls to
    tmp_path/kubectl), with sleeps that return at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kubectl").write_text(kubectl)
    (bin_dir / "kubectl").chmod(0o755)
    script = tmp_path / f"{stage}.sh"
    script.write_text(render(stage, "k8smaster", params))
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {shlex.quote(str(script))}; sleep() {{ :; }}; main"],
        env={"KVMK_SOURCE_ONLY": "1", "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_KUBECTL_LOG": str(tmp_path / "kubectl"),
             **env},
        capture_output=True, text=True, check=False,
    )


def wait_for_node(tmp_path: Path, stage: str, params: dict, ready_after: int) -> subprocess.CompletedProcess:
    return run_against_kubectl(tmp_path, stage, params, FAKE_KUBECTL, FAKE_READY_AFTER=str(ready_after))


@pytest.mark.parametrize("stage, params, done, late", [
    ("ready", {"WAIT_FOR_NODES": ["k8sworker1"], "KUBECONFIG_PATH": "/dev/null", "CHECK_READYZ": True},
     "Ready: k8sworker1", "after {timeout}s: not Ready: k8sworker1; /readyz: ok"),
    ("uncordon", {"TARGET_NODE": "k8sworker1", "KUBE_VERSION": "1.36.3"},
     "k8sworker1 Ready, kubelet v1.36.3", "k8sworker1 is not Ready at 1.36.3 after {timeout}s (Ready=False, kubelet v1.36.3)"),
])
def test_a_node_wait_asks_again_until_ready_and_says_what_it_saw_when_time_is_up(tmp_path, stage, params, done, late):
    ready = wait_for_node(tmp_path, stage, {**params, "TIMEOUT_SECONDS": 60}, ready_after=3)
    assert ready.returncode == 0 and done in ready.stdout, ready.stderr
    assert (tmp_path / "kubectl").read_text().count("Ready") == 3
    (tmp_path / "kubectl").unlink()
    late_run = wait_for_node(tmp_path, stage, {**params, "TIMEOUT_SECONDS": 0}, ready_after=99)
    assert late_run.returncode != 0 and late.format(timeout=0) in late_run.stderr, late_run.stderr


# The node exists; its Ready condition is $FAKE_READY, or the API server errs when that is "error".
FAKE_KUBECTL_FOR_REMOVAL = """#!/bin/bash
echo "$*" >>"$FAKE_KUBECTL_LOG"
case "$*" in
  *'type=="Ready"'*) [[ "$FAKE_READY" != error ]] || { echo "the server is currently unable" >&2; exit 1; }
                     echo "$FAKE_READY" ;;
esac
"""


@pytest.mark.parametrize("ready, rc, calls", [
    ("True", 0, ["drain k8sworker3", "delete node k8sworker3"]),
    ("False", 0, ["delete node k8sworker3"]),
    # Without an answer the stage cannot tell a lost node from a busy API server: it stops.
    ("error", 1, []),
])
def test_removing_a_node_drains_it_only_when_it_is_ready(tmp_path, ready, rc, calls):
    params = {"TARGET_NODE": "k8sworker3", "DRAIN_TIMEOUT_SECONDS": 300}
    removal = run_against_kubectl(tmp_path, "remove-node", params, FAKE_KUBECTL_FOR_REMOVAL, FAKE_READY=ready)
    assert removal.returncode == rc, removal.stderr
    acting = [line for line in (tmp_path / "kubectl").read_text().splitlines() if line.startswith(("drain ", "delete "))]
    assert len(acting) == len(calls) and all(map(str.startswith, acting, calls)), acting


def test_installed_version_is_empty_for_a_package_dpkg_never_saw(tmp_path):
    script = render("packages", "k8sworker1", {})
    found = source_and_run(script, "installed_version no-such-package-kvmk; echo rc=$?; installed_version bash", tmp_path)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0] == "rc=0" and re.match(r"^\d", lines[1]), lines


def test_installed_version_counts_a_held_package_as_installed(tmp_path):
    """dpkg-query's status of a held, installed package starts with "hi", not "ii"."""
    fake = tmp_path / "bin" / "dpkg-query"
    fake.parent.mkdir()
    fake.write_text("#!/bin/bash\necho 'hi  1.36.3-1.1'\n")
    fake.chmod(0o755)
    script = tmp_path / "packages.sh"
    script.write_text(render("packages", "k8sworker1", {}))
    found = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {script}; installed_version kubeadm"],
        env={"KVMK_SOURCE_ONLY": "1", "PATH": f"{fake.parent}:/usr/bin:/bin"}, capture_output=True, text=True, check=False,
    )
    assert (found.returncode, found.stdout) == (0, "1.36.3-1.1\n"), found.stderr


def test_a_reset_removes_the_cni_configs_but_keeps_their_directory(tmp_path):
    """containerd 2.x's CRI plugin exits when /etc/cni/net.d goes away (seen on a real node)."""
    net_d = tmp_path / "state" / "etc" / "cni" / "net.d"
    net_d.mkdir(parents=True)
    for name in ("10-flannel.conflist", "99-loopback.conf", ".kubernetes-cni-keep"):
        (net_d / name).write_text("{}")
    attempts = tmp_path / "state" / "var" / "lib" / "kvm-kubeadm"
    attempts.mkdir(parents=True)
    (attempts / "init.attempt").touch()  # an unfinished attempt: the next run resets first
    result = run_init_attempt(tmp_path, rc=0)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in net_d.iterdir()) == [".kubernetes-cni-keep"]
    assert kubeadm_calls(tmp_path) == ["reset", "init"]


def fake_tools(tmp_path: Path, installed: str) -> dict[str, str]:
    """dpkg-query that reports every package installed and held at `installed`; apt-get and
    apt-mark that only record their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {
        "dpkg-query": f"echo 'hi  {installed}'",
        "apt-get": 'echo "apt-get $*" >>"$CALLS"',
        "apt-mark": 'echo "apt-mark $*" >>"$CALLS"',
    }.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"KVMK_SOURCE_ONLY": "1", "PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls")}


def run_sourced(script: str, call: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "stage.sh"
    path.write_text(script)
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source {path}; {call}"], env=env,
                          capture_output=True, text=True, check=False)


def test_the_packages_stage_leaves_installed_kube_packages_to_the_upgrade(dev_settings, tmp_path):
    env = fake_tools(tmp_path, "1.35.9-1.1")
    script = render("packages", "k8sworker1", packages_params(dev_settings))
    result = run_sourced(script, "use_kube_repo() { :; }; install_kube_packages", env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "they change only through an upgrade" in result.stdout
    assert not (tmp_path / "calls").exists(), "no package was installed, held or unheld"


@pytest.mark.parametrize("wanted, version, matches", [
    ("1.36", "v1.36.3", True), ("1.36.3", "1.36.3-1.1", True), ("1.36.3", "v1.36.3", True),
    ("1.36.3", "1.36.30-1.1", False), ("1.37", "v1.36.3", False), ("1.36", "", False),
])
def test_versions_match_as_packages_and_kubelets_write_them(tmp_path, wanted, version, matches):
    result = source_and_run(render("upgrade-kubeadm", "k8sworker1", {}), f"matches_version {wanted} '{version}'", tmp_path)
    assert (result.returncode == 0) == matches, result.stderr


def test_an_upgrade_never_downgrades_a_package(tmp_path):
    env = fake_tools(tmp_path, "1.36.4-1.1")
    result = run_sourced(render("upgrade-kubeadm", "k8sworker2", {}), "install_held 1.36.3-1.1 kubeadm", env, tmp_path)
    assert result.returncode != 0
    assert "[upgrade-kubeadm k8sworker2] kubeadm 1.36.4-1.1 is newer than 1.36.3-1.1" in result.stderr
    assert not (tmp_path / "calls").exists()
    upgraded = run_sourced(render("upgrade-kubeadm", "k8sworker2", {}), "install_held 1.37.0-1.1 kubeadm", env, tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        "apt-get -q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confold install --allow-change-held-packages kubeadm=1.37.0-1.1",
        "apt-mark hold kubeadm",
    ]


@pytest.mark.parametrize("answers_after, timeout, expected_rc", [(2, 60, 0), (99, 0, 1)])
def test_flannel_waits_until_the_api_answers_at_its_service_address(tmp_path, answers_after, timeout, expected_rc):
    """Started before kube-proxy programs the Service address, flannel crash-loops into a long back-off (seen
    on a real cluster); the cni stage first waits for that path, bounded by its timeout."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/bash\necho "$*" >>{calls}\n(( $(wc -l <{calls}) > {answers_after} ))\n')
    fake.chmod(0o755)
    script = tmp_path / "cni.sh"
    script.write_text(render("cni", "k8smaster", {"API_SERVICE_URL": "https://10.96.0.1:443", "TIMEOUT_SECONDS": timeout}))
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {script}; sleep() {{ :; }}; wait_for_api_service"],
        env={"KVMK_SOURCE_ONLY": "1", "PATH": f"{fake.parent}:/usr/bin:/bin"}, capture_output=True, text=True, check=False,
    )
    assert result.returncode == expected_rc, result.stderr
    assert calls.read_text().splitlines()[0] == "--server=https://10.96.0.1:443 --request-timeout=10s get --raw=/readyz"
    if expected_rc:
        assert "does not answer at its Service address https://10.96.0.1:443 after 0s" in result.stderr


@pytest.mark.parametrize("image, reference", [
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("rancher/local-path-provisioner:v0.0.30", "docker.io/rancher/local-path-provisioner:v0.0.30"),
    ("ghcr.io/flannel-io/flannel:v0.27.4", "ghcr.io/flannel-io/flannel:v0.27.4"),
    ("192.168.56.1:5000/metrics-server:v0.8.0", "192.168.56.1:5000/metrics-server:v0.8.0"),
    ("localhost/pause:3.10", "localhost/pause:3.10"),
])
def test_preloaded_images_are_pulled_by_the_reference_the_kubelet_resolves(image, reference, dev_settings, tmp_path):
    script = render("preload-images", procedure.PREPARED_IMAGE_BUILDER, procedure.preload_params(dev_settings))
    result = source_and_run(script, f"full_reference {shlex.quote(image)}", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == reference
