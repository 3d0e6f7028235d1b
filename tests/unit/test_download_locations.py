"""Every place a node downloads from comes from a config key, and containerd's
registry hosts (mirrors and trust) are rendered from the `registries` key."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components.config import parse
from components.kubeadm import api_endpoint, api_service_ip
from components.registries import certs_d_files
from components.scripts import SCRIPTS_DIR, render
from components.procedure import packages_params
from tests.program import PROJECT_DIR, run_program

URL = re.compile(r"https?://[^\s'\"\\]+")
UPSTREAM_HOSTS = ("pkgs.k8s.io", "registry.k8s.io", "ghcr.io", "docker.io", "download.docker.com", "github.com", "quay.io")


@pytest.fixture
def ca_file(tmp_path) -> Path:
    key, cert = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=mirror CA"],
        check=True, capture_output=True,
    )
    return cert


@pytest.fixture
def mirrored(dev_config, ca_file) -> dict:
    """The dev stack with every download location set to a mirror of its own."""
    return {
        **dev_config,
        "mirrors": {
            "kubePackages": "http://kube.mirror.test/kubernetes",
            "imageRepository": "images.mirror.test:5000/k8s",
            "flannelManifest": "http://flannel.mirror.test/{version}/kube-flannel.yml",
            "flannelRegistry": "images.mirror.test:5000/flannel-io",
            "osApt": "http://apt.mirror.test",
            "containerdPackages": "http://docker.mirror.test/docker",
            "metricsServerManifest": "http://addons.mirror.test/metrics-server/{version}/components.yaml",
            "localPathManifest": "http://addons.mirror.test/local-path/{version}/local-path-storage.yaml",
        },
        "registries": {
            "registry.k8s.io": {"mirrors": ["https://images.mirror.test:5000"]},
            "ghcr.io": {"mirrors": ["https://images.mirror.test:5000"]},
            "docker.io": {"mirrors": ["http://plain.mirror.test:5000"]},
            "images.mirror.test:5000": {"caFile": str(ca_file)},
            "plain.mirror.test:5000": {"plainHttp": True},
        },
    }


def test_stage_scripts_name_no_download_location_of_their_own():
    for script in sorted(SCRIPTS_DIR.glob("*.sh")):
        text = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
        assert not URL.findall(text), f"{script.name}: a location must come from a parameter"
        assert not [host for host in UPSTREAM_HOSTS if host in text], script.name


def test_every_location_the_stages_receive_comes_from_a_config_key(mirrored):
    run = run_program(mirrored)
    assert run.error is None, run.error
    settings = parse(mirrored, "dev", PROJECT_DIR)
    mirrors = settings.mirrors
    # Each key and the locations derived from its value.
    by_key = {
        "mirrors.kubePackages": [mirrors.kube_packages],
        "mirrors.flannelManifest": [settings.flannel.manifest_url],
        "mirrors.osApt": [mirrors.os_apt],
        "mirrors.containerdPackages": [mirrors.containerd_packages],
        "mirrors.metricsServerManifest": ["http://addons.mirror.test/metrics-server/v0.8.0/components.yaml"],
        "mirrors.localPathManifest": ["http://addons.mirror.test/local-path/v0.0.30/local-path-storage.yaml"],
        **{f"registries.{r.host}": [f"https://{r.host}", f"http://{r.host}", *r.mirrors] for r in settings.registries},
        "registries.docker.io (its API server)": ["https://registry-1.docker.io"],
        # Not a download: flannel's path to the API, the first address of the service CIDR.
        "kubernetes.serviceCidr": [f"https://{api_service_ip(settings.kubernetes)}:443"],
        # Not a download either: a join first asks the API server whether it is ready.
        "controlPlane.ip": [f"https://{api_endpoint(settings)}"],
    }
    received = []
    for command in run.stage_commands():
        for field in ("create", "delete", "stdin"):
            received += URL.findall(command.inputs.get(field) or "")
    assert received
    used = set()
    for url in received:
        keys = [key for key, prefixes in by_key.items() if any(url.startswith(p) for p in prefixes)]
        assert keys, f"{url} comes from no config key"
        used.update(keys)
    assert used == set(by_key), f"keys that reached no stage: {set(by_key) - used}"
    # Registries are named without a scheme: kubeadm's images, the pause image and flannel's.
    (init,) = run.commands("init")
    cluster = next(d for d in yaml.safe_load_all(init.inputs["stdin"]) if d["kind"] == "ClusterConfiguration")
    assert cluster["imageRepository"] == "images.mirror.test:5000/k8s"
    packages = run.by_name("k8s-k8sworker1-packages")
    assert packages.param("IMAGE_REPOSITORY") == "images.mirror.test:5000/k8s"
    kustomization = yaml.safe_load(run.by_name("k8s-k8smaster-cni").param("KUSTOMIZATION"))
    assert {image["newName"].rsplit("/", 1)[0] for image in kustomization["images"]} == {"images.mirror.test:5000/flannel-io"}
    # metrics-server is a registry.k8s.io image: it follows the image repository, held flat there.
    metrics = yaml.safe_load(run.by_name("k8s-metrics-server").param("KUSTOMIZATION"))
    assert metrics["images"] == [
        {"name": "registry.k8s.io/metrics-server/metrics-server", "newName": "images.mirror.test:5000/k8s/metrics-server"}
    ]


def test_hosts_toml_sends_each_registry_to_its_mirrors_with_their_trust(mirrored, ca_file):
    files = certs_d_files(parse(mirrored, "dev", PROJECT_DIR).registries)
    assert set(files) == {
        "registry.k8s.io/hosts.toml", "ghcr.io/hosts.toml", "docker.io/hosts.toml",
        "images.mirror.test:5000/hosts.toml", "images.mirror.test:5000/ca.crt", "plain.mirror.test:5000/hosts.toml",
    }
    k8s = tomllib.loads(files["registry.k8s.io/hosts.toml"])
    assert k8s["server"] == "https://registry.k8s.io"
    assert k8s["host"] == {
        "https://images.mirror.test:5000": {
            "capabilities": ["pull", "resolve"], "ca": "../images.mirror.test:5000/ca.crt",
        }
    }
    docker = tomllib.loads(files["docker.io/hosts.toml"])
    assert docker["server"] == "https://registry-1.docker.io"
    assert docker["host"] == {"http://plain.mirror.test:5000": {"capabilities": ["pull", "resolve"]}}
    private = tomllib.loads(files["images.mirror.test:5000/hosts.toml"])
    assert private == {"server": "https://images.mirror.test:5000", "ca": "ca.crt"}
    assert tomllib.loads(files["plain.mirror.test:5000/hosts.toml"]) == {"server": "http://plain.mirror.test:5000"}
    assert files["images.mirror.test:5000/ca.crt"] == ca_file.read_text()


def test_no_registries_configured_means_an_empty_certs_d(dev_config):
    params = packages_params(parse(dev_config, "dev", PROJECT_DIR))
    assert params["CERTS_D_PATHS"] == [] and params["CERTS_D_FILES"] == []


def test_packages_stage_writes_exactly_the_registry_files_and_is_idempotent(mirrored):
    """write_registry_hosts on a private /etc (a tmpfs in a user and mount namespace)."""
    script = render("packages", "k8sworker1", packages_params(parse(mirrored, "dev", PROJECT_DIR)))
    probe = (
        "mount -t tmpfs none /etc && mkdir -p /etc/containerd/certs.d/stale.example && "
        f"KVMK_SOURCE_ONLY=1 && source /dev/stdin <<<{shlex.quote(script)} && "
        "write_registry_hosts && find /etc/containerd/certs.d -type f | sort && "
        "cat /etc/containerd/certs.d/registry.k8s.io/hosts.toml && write_registry_hosts && echo second-run-quiet"
    )
    result = subprocess.run(
        ["unshare", "-rm", "bash", "-c", f"set -euo pipefail; export KVMK_SOURCE_ONLY=1; {probe}"],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("/etc/containerd/certs.d/")) == sorted(
        f"/etc/containerd/certs.d/{path}" for path in certs_d_files(parse(mirrored, "dev", PROJECT_DIR).registries)
    ), "exactly the configured files, the stale directory gone"
    assert 'server = "https://registry.k8s.io"' in result.stdout
    assert lines[-1] == "second-run-quiet" and lines.count("[packages k8sworker1] registry hosts: 6 file(s) in /etc/containerd/certs.d") == 1
