"""The addons' kustomizations over the pinned upstream manifests the mirror kit serves, built by
the real kustomize in the kit's kubectl (`kubectl kustomize`, offline): every patch finds its
target, and the objects that come out are what the stages mean to apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components import addons
from components.config import parse
from tests.conftest import with_keys
from tests.mirror import PINS
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import require
from tests.tools.test_real_tools import offline

pytestmark = pytest.mark.tools

KIT = PROJECT_DIR / ".cache" / "mirror"
KUBECTL = KIT / "build" / f"kubernetes-{PINS['MIRROR_KUBE_VERSION']}" / "bin" / "kubectl"


def built(tmp_path: Path, kustomization: str, manifest: Path, name: str) -> dict[tuple[str, str], dict]:
    """`kubectl kustomize` of `kustomization` next to the kit's copy of `manifest`, by (kind, name)."""
    missing = [str(p) for p in (KUBECTL, manifest) if not p.exists()]
    require(f"no mirror kit ({', '.join(missing)}): run tools/mirror-kit/build.sh" if missing else None)
    (tmp_path / name).write_bytes(manifest.read_bytes())
    (tmp_path / "kustomization.yaml").write_text(kustomization)
    output = offline(str(KUBECTL), "kustomize", str(tmp_path)).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(output) if d}


def settings_with(ssh_keys, **keys):
    return parse({**with_keys(load_stack_config("dev"), ssh_keys), **keys}, "dev", PROJECT_DIR)


def test_metrics_server_gets_insecure_kubelet_tls_and_the_kits_image(ssh_keys, tmp_path):
    settings = settings_with(ssh_keys, mirrors={"imageRepository": "192.168.56.1:5000"})
    manifest = KIT / "www" / "metrics-server" / PINS["MIRROR_METRICS_SERVER_VERSION"] / "components.yaml"
    objects = built(tmp_path, addons.metrics_server_kustomization(settings), manifest, "components.yaml")
    (container,) = objects["Deployment", "metrics-server"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][-1] == "--kubelet-insecure-tls" and "--kubelet-use-node-status-port" in container["args"]
    assert container["image"] == f"192.168.56.1:5000/metrics-server:{settings.addons.metrics_server_version}"
    assert ("APIService", "v1beta1.metrics.k8s.io") in objects


def test_local_path_is_the_default_class_with_our_directory_and_helper_image(ssh_keys, tmp_path):
    settings = settings_with(ssh_keys, addons={"localPathDir": "/srv/volumes"})
    manifest = KIT / "www" / "local-path-provisioner" / PINS["MIRROR_LOCAL_PATH_VERSION"] / "local-path-storage.yaml"
    objects = built(tmp_path, addons.local_path_kustomization(settings), manifest, "local-path-storage.yaml")
    storage_class = objects["StorageClass", addons.LOCAL_PATH_CLASS]
    assert storage_class["metadata"]["annotations"] == {addons.DEFAULT_CLASS: "true"}
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    config = objects["ConfigMap", "local-path-config"]["data"]
    assert json.loads(config["config.json"])["nodePathMap"][0]["paths"] == ["/srv/volumes"]
    # Upstream's setup and teardown scripts stay; the helper pod runs the provisioner's image.
    assert "mkdir -m 0777 -p" in config["setup"] and "rm -rf" in config["teardown"]
    (provisioner,) = objects["Deployment", "local-path-provisioner"]["spec"]["template"]["spec"]["containers"]
    (helper,) = yaml.safe_load(config["helperPod.yaml"])["spec"]["containers"]
    assert helper["image"] == provisioner["image"] == f"rancher/local-path-provisioner:{settings.addons.local_path_version}"
