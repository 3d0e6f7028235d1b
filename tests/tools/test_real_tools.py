"""Rendered kubeadm configs and the containerd edit, judged by the real tools.

kubeadm (built from k8s.io/kubernetes) and containerd 2.x (built from Go modules)
come from tools/build-toolchain.sh; containerd 1.x is Debian's package. Every
tool runs inside `unshare -rn`, a network namespace with nothing in it, so a
lookup kubeadm might try can never leave the machine.
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components import kubeadm
from components.config import parse
from components.procedure import packages_params
from components.scripts import render
from providers.bootstrap_token import TOKEN_FORMAT, generate_token
from tests.conftest import with_keys
from tests.mirror import KUBE_VERSIONS, PINS
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import TOOLCHAIN, require

pytestmark = pytest.mark.tools

BIN = TOOLCHAIN / "bin"
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
# The control-plane binaries the mirror kit builds into its images.
COMPONENT_BINARIES = PROJECT_DIR / ".cache" / "mirror" / "build" / "images" / "bin" / "kube-v1.36.3"
CONTAINERDS = {"containerd1": 2, "containerd2": 3, "containerd2-latest": 4}  # binary: config version it writes


def offline(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(["unshare", "-rn", *argv], capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def need(*names: str) -> None:
    missing = [name for name in names if not (BIN / name).exists()]
    require(f"missing .toolchain/bin/{', '.join(missing)}: run tools/setup.sh --full" if missing else None)
    require(None if shutil.which("unshare") else "unshare (util-linux) is not installed")


@pytest.fixture(scope="module")
def kubeadm_bin() -> str:
    need("kubeadm")
    version = offline(str(BIN / "kubeadm"), "version", "-o", "short").stdout.strip()
    assert version == "v1.36.3", version
    return str(BIN / "kubeadm")


def stack_settings(stack: str, keys, **overrides):
    config = {**with_keys(load_stack_config(stack), keys), **overrides}
    return parse(config, stack, PROJECT_DIR)


@pytest.mark.parametrize("stack", STACKS)
def test_kubeadm_validates_every_stacks_init_and_join_config(kubeadm_bin, ssh_keys, tmp_path, stack):
    settings = stack_settings(stack, ssh_keys)
    init = tmp_path / "init.yaml"
    init.write_text(kubeadm.init_config(settings, generate_token()))
    assert offline(kubeadm_bin, "config", "validate", "--config", str(init)).stdout.strip() == "ok"
    for worker in settings.workers[:1]:
        join = tmp_path / "join.yaml"
        join.write_text(kubeadm.join_config(kubeadm.api_endpoint(settings), worker, settings.kubernetes, generate_token(), "sha256:" + "0f" * 32))
        result = offline(kubeadm_bin, "config", "validate", "--config", str(join))
        assert result.stdout.strip() == "ok" and "W" not in result.stderr[:1], result.stderr


@pytest.mark.parametrize("stack, mirrors, repository", [
    (stack, None, "registry.k8s.io") for stack in STACKS
] + [("dev", "cn", "registry.aliyuncs.com/google_containers")])
def test_kubeadm_lists_images_under_the_configured_repository(kubeadm_bin, ssh_keys, tmp_path, stack, mirrors, repository):
    overrides = {"mirrors": mirrors} if mirrors else {}
    settings = stack_settings(stack, ssh_keys, **overrides)
    init = tmp_path / "init.yaml"
    init.write_text(kubeadm.init_config(settings, generate_token()))
    images = offline(kubeadm_bin, "config", "images", "list", "--config", str(init)).stdout.split()
    assert len(images) == 7, images
    for image in images:
        assert image.startswith(repository + "/"), image
    assert f"{repository}/kube-apiserver:v1.36.3" in images


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_kubeadm_lists_for_each_kit_version_the_images_the_kit_builds(kubeadm_bin, version):
    """The mirror kit builds the four kube images of each version it serves (MIRROR_KUBE_VERSION and the
    older MIRROR_KUBE_UPGRADE_FROM) and one etcd, coredns and pause for all of them."""
    listed = offline(kubeadm_bin, "config", "images", "list", "--kubernetes-version", version,
                     "--image-repository", "registry.k8s.io").stdout.split()
    kube = [f"registry.k8s.io/{c}:{version}" for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")]
    shared = [f"registry.k8s.io/coredns/coredns:{PINS['MIRROR_COREDNS_VERSION']}",
              f"registry.k8s.io/pause:{PINS['MIRROR_PAUSE_VERSION']}", f"registry.k8s.io/etcd:{PINS['MIRROR_ETCD_IMAGE_TAG']}"]
    assert sorted(listed) == sorted(kube + shared)


def test_the_raised_component_flags_exist_and_kubeadm_accepts_them(kubeadm_bin, ssh_keys, tmp_path):
    settings = stack_settings(
        "dev", ssh_keys, kubernetes={"leaderElectionRenewDeadlineSeconds": 60, "etcdHealthCheckTimeoutSeconds": 10}
    )
    init = tmp_path / "init.yaml"
    init.write_text(kubeadm.init_config(settings, generate_token()))
    assert offline(kubeadm_bin, "config", "validate", "--config", str(init)).stdout.strip() == "ok"
    cluster = next(d for d in yaml.safe_load_all(init.read_text()) if d["kind"] == "ClusterConfiguration")
    binaries = {"apiServer": "kube-apiserver", "controllerManager": "kube-controller-manager", "scheduler": "kube-scheduler"}
    for component, name in binaries.items():
        binary = COMPONENT_BINARIES / name
        require(None if binary.exists() else f"no {binary}: run tools/mirror-kit/build.sh (tools/setup.sh --full does)")
        flags = offline(str(binary), "--help").stdout
        for arg in cluster[component]["extraArgs"]:
            assert f"--{arg['name']} duration" in flags, (component, arg)


def test_kubeadm_writes_the_configured_probes_into_its_static_pods(kubeadm_bin, ssh_keys, tmp_path):
    """kubeadm's dry run writes the control plane's manifests with the patches the init stage puts in place."""
    settings = stack_settings("dev", ssh_keys, kubernetes={
        **load_stack_config("dev")["kubernetes"], "readinessProbePeriodSeconds": 10, "livenessProbeFailureThreshold": 30,
    })
    patches = tmp_path / "patches"
    patches.mkdir()
    for name, text in kubeadm.static_pod_patches(settings.kubernetes).items():
        (patches / name).write_text(text)
    documents = list(yaml.safe_load_all(kubeadm.init_config(settings, generate_token())))
    assert documents[0]["patches"] == {"directory": kubeadm.PATCHES_DIR}
    documents[0]["patches"]["directory"] = str(patches)  # the stage's directory, here under tmp_path
    init = tmp_path / "init.yaml"
    init.write_text(kubeadm.dump_all(documents))
    manifests = tmp_path / "manifests"
    for phase in (["control-plane", "all"], ["etcd", "local"]):
        offline("env", f"KUBEADM_INIT_DRYRUN_DIR={manifests}", kubeadm_bin, "init", "phase", *phase,
                "--config", str(init), "--dry-run")
    for component, has_readiness_probe in kubeadm.STATIC_POD_HAS_READINESS_PROBE.items():
        (container,) = yaml.safe_load((manifests / f"{component}.yaml").read_text())["spec"]["containers"]
        liveness = container["livenessProbe"]
        assert liveness["failureThreshold"] == 30 and liveness["periodSeconds"] == 10 and "httpGet" in liveness, component
        if has_readiness_probe:
            readiness = container["readinessProbe"]
            assert readiness["periodSeconds"] == 10 and "httpGet" in readiness, component
        else:
            assert "readinessProbe" not in container, component
    upgrade = tmp_path / "upgrade.yaml"
    upgrade.write_text(kubeadm.upgrade_config(settings.kubernetes))
    result = offline(kubeadm_bin, "config", "validate", "--config", str(upgrade))
    assert result.stdout.strip() == "ok" and "W" not in result.stderr[:1], result.stderr


def test_kubeadm_rejects_a_broken_config(kubeadm_bin, ssh_keys, tmp_path):
    """The check can fail: a pod CIDR that is not a CIDR is refused."""
    settings = stack_settings("dev", ssh_keys)
    documents = list(yaml.safe_load_all(kubeadm.init_config(settings, generate_token())))
    next(d for d in documents if d["kind"] == "ClusterConfiguration")["networking"]["podSubnet"] = "10.244.0.0/99"
    broken = tmp_path / "broken.yaml"
    broken.write_text(kubeadm.dump_all(documents))
    result = offline(kubeadm_bin, "config", "validate", "--config", str(broken), check=False)
    assert result.returncode != 0 and "podSubnet" in result.stderr, result.stderr


def minimal_kubeconfig(path: Path, ca_cert: Path | None = None) -> Path:
    cluster = {"server": "https://192.0.2.1:6443"}
    if ca_cert is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_cert.read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }))
    return path


def test_our_tokens_match_what_kubeadm_generates_and_accepts(kubeadm_bin, tmp_path):
    for _ in range(5):
        assert TOKEN_FORMAT.match(offline(kubeadm_bin, "token", "generate").stdout.strip())
    kubeconfig = minimal_kubeconfig(tmp_path / "kubeconfig")
    ours = generate_token()
    accepted = offline(kubeadm_bin, "token", "create", ours, "--dry-run", "--kubeconfig", str(kubeconfig))
    assert ours in accepted.stdout
    refused = offline(kubeadm_bin, "token", "create", ours.upper(), "--dry-run", "--kubeconfig", str(kubeconfig), check=False)
    assert refused.returncode != 0 and "was not of the form" in refused.stderr


@pytest.mark.parametrize("algorithm", ["RSA-2048", "ECDSA-P256"])
def test_ca_hash_recipe_matches_kubeadms_own(kubeadm_bin, ssh_keys, tmp_path, algorithm):
    settings = stack_settings("dev", ssh_keys)
    documents = kubeadm.init_documents(settings)
    cluster = next(d for d in documents if d["kind"] == "ClusterConfiguration")
    cluster.update(certificatesDir=str(tmp_path / "pki"), encryptionAlgorithm=algorithm)
    config = tmp_path / "init.yaml"
    config.write_text(kubeadm.dump_all(documents))
    offline(kubeadm_bin, "init", "phase", "certs", "ca", "--config", str(config))
    ca = tmp_path / "pki" / "ca.crt"

    script = tmp_path / "ca-hash.sh"
    script.write_text(render("ca-hash", "k8smaster", {"CA_CERT": str(ca)}))
    ours = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ours), ours

    kubeconfig = minimal_kubeconfig(tmp_path / "kubeconfig", ca)
    join = offline(kubeadm_bin, "token", "create", generate_token(), "--print-join-command", "--dry-run",
                   "--kubeconfig", str(kubeconfig)).stdout
    kubeadms = re.search(r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})", join).group(1)
    assert ours == kubeadms


def containerd_edit(binary: str, tmp_path: Path, pause_image: str, ssh_keys) -> dict:
    """`config default`, then the packages stage's own edit, then `config dump`, parsed."""
    config = tmp_path / "config.toml"
    config.write_text(offline(binary, "config", "default").stdout)
    settings = stack_settings("dev", ssh_keys)
    script = tmp_path / "packages.sh"
    script.write_text(render("packages", "k8sworker1", packages_params(settings)))
    subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(script))} && configure_containerd {shlex.quote(str(config))} {pause_image}"],
        env={"KVMK_SOURCE_ONLY": "1", "PATH": "/usr/bin:/bin"}, check=True, capture_output=True, text=True,
    )
    return tomllib.loads(offline(binary, "--config", str(config), "config", "dump").stdout)


@pytest.mark.parametrize("name", sorted(CONTAINERDS))
def test_containerd_loads_our_edit_with_systemd_cgroup_and_our_pause_image(ssh_keys, tmp_path, name):
    need(name)
    binary = str(BIN / name)
    default = tomllib.loads(offline(binary, "config", "default").stdout)
    assert default["version"] == CONTAINERDS[name]
    pause = "registry.aliyuncs.com/google_containers/pause:3.10.2"
    dumped = containerd_edit(binary, tmp_path, pause, ssh_keys)
    if CONTAINERDS[name] == 2:
        cri = dumped["plugins"]["io.containerd.grpc.v1.cri"]
        runc, sandbox, registry = cri["containerd"]["runtimes"]["runc"], cri["sandbox_image"], cri["registry"]
        default_runc = default["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    else:
        runtime = dumped["plugins"]["io.containerd.cri.v1.runtime"]
        runc = runtime["containerd"]["runtimes"]["runc"]
        images = dumped["plugins"]["io.containerd.cri.v1.images"]
        sandbox, registry = images["pinned_images"]["sandbox"], images["registry"]
        default_runc = default["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    # containerd reads registry mirrors and trust from the hosts.toml files there.
    assert registry["config_path"] == "/etc/containerd/certs.d"
    # The edit must have done something: the default says false and another pause image.
    assert default_runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["SystemdCgroup"] is True
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert sandbox == pause


@pytest.mark.parametrize("stack", STACKS)
def test_kubeadm_validates_every_stacks_upgrade_config(kubeadm_bin, ssh_keys, tmp_path, stack):
    config = tmp_path / "upgrade.yaml"
    config.write_text(kubeadm.upgrade_config(stack_settings(stack, ssh_keys).kubernetes))
    result = offline(kubeadm_bin, "config", "validate", "--config", str(config))
    assert result.stdout.strip() == "ok" and "W" not in result.stderr[:1], result.stderr


@pytest.mark.parametrize("stage", ["upgrade-apply", "upgrade-node"])
def test_every_kubeadm_upgrade_flag_the_stages_pass_exists(kubeadm_bin, stage):
    script = render(stage, "node", {})
    calls = re.findall(r"kubeadm upgrade (apply|plan|node)\b([^\n]*)", script)
    assert calls, script
    for command, arguments in calls:
        known = offline(kubeadm_bin, "upgrade", command, "--help").stdout
        for flag in re.findall(r"--[a-z-]+", arguments):
            assert re.search(rf"^\s+(-\w, )?{flag}\b", known, re.M), f"kubeadm upgrade {command} has no {flag}"


def test_kubeadm_upgrade_apply_takes_our_version_and_config_together(kubeadm_bin, ssh_keys, tmp_path):
    """With no cluster to reach, kubeadm gets as far as connecting: the version and the config were accepted."""
    config = tmp_path / "upgrade.yaml"
    config.write_text(kubeadm.upgrade_config(stack_settings("dev", ssh_keys).kubernetes))
    kubeconfig = minimal_kubeconfig(tmp_path / "kubeconfig")
    result = offline(kubeadm_bin, "upgrade", "apply", "v1.36.3", "--config", str(config), "--yes", "--dry-run",
                     "--kubeconfig", str(kubeconfig), check=False, env={"KUBEADM_UPGRADE_DRYRUN_DIR": str(tmp_path)})
    assert result.returncode != 0 and "couldn't create a Kubernetes client" in result.stderr, result.stderr
