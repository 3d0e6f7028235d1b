"""The prepared image's list of images to pull, as `preload-images.sh` reads it from the pinned manifests
the mirror kit serves, through the stages' own kustomizations, with the real kustomize in the kit's kubectl:
every image the applied objects run, and nothing else."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from components import procedure
from components.config import parse
from components.scripts import render
from tests.conftest import with_keys
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import require
from tests.tools.test_addon_manifests import KIT, KUBECTL, built

pytestmark = pytest.mark.tools

REGISTRY = "192.168.56.1:5000"


def container_images(objects) -> set[str]:
    images = set()
    for document in objects.values():
        spec = document.get("spec", {}).get("template", {}).get("spec", {})
        images |= {c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])}
    return images


def test_the_images_of_the_pod_network_and_the_addons_are_what_their_objects_run(ssh_keys, tmp_path):
    require(None if KUBECTL.exists() else f"no mirror kit ({KUBECTL}): run tools/mirror-kit/build.sh")
    settings = parse({**with_keys(load_stack_config("dev"), ssh_keys),
                      "mirrors": {"imageRepository": REGISTRY, "flannelRegistry": f"{REGISTRY}/flannel-io"}},
                     "dev", PROJECT_DIR)
    params = procedure.preload_params(settings)
    files = {path.name: path for part in ("flannel", "metrics-server", "local-path-provisioner")
             for path in (KIT / "www" / part).rglob("*") if path.name in params["MANIFEST_FILES"]}
    assert set(files) == set(params["MANIFEST_FILES"]) == {"kube-flannel.yml", "components.yaml", "local-path-storage.yaml"}
    kit_files = tmp_path / "kit"
    kit_files.mkdir()
    for name, path in files.items():
        (kit_files / name).write_bytes(path.read_bytes())
    script = render("preload-images", procedure.PREPARED_IMAGE_BUILDER, params)
    # Sourced without its main; the download is the kit's copy of each manifest, the rest runs for real.
    listed = subprocess.run(
        ["unshare", "-rn", "bash", "-c", f'{script}\nfetch_once() {{ cp "$KIT_FILES/$(basename "$2")" "$2"; }}\n'
                       'for i in "${!MANIFEST_URLS[@]}"; do manifest_images "$WORK/$i" "${KUSTOMIZATIONS[$i]}" '
                       '"${MANIFEST_FILES[$i]}" "${MANIFEST_URLS[$i]}"; done'],
        env={"PATH": f"{KUBECTL.parent}:/usr/bin:/bin", "KVMK_SOURCE_ONLY": "1", "WORK": str(tmp_path / "work"),
             "KIT_FILES": str(kit_files)},
        capture_output=True, text=True, check=False,
    )
    assert listed.returncode == 0, listed.stderr

    expected = set()
    for (_, kustomization), name in zip(procedure.fetched_manifests(settings), params["MANIFEST_FILES"]):
        (tmp_path / f"expected-{name}").mkdir()
        objects = built(tmp_path / f"expected-{name}", kustomization, files[name], name)
        expected |= container_images(objects)
    helper = objects["ConfigMap", "local-path-config"]["data"]["helperPod.yaml"]
    expected |= {c["image"] for c in yaml.safe_load(helper)["spec"]["containers"]}
    assert set(listed.stdout.split()) == expected
    assert all(image.startswith(REGISTRY) for image in expected if "flannel" in image or "metrics-server" in image)

