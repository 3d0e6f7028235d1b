"""The prepared image's dynamic provider, run directly (under mocks its methods never run), against
stand-ins for `virsh` and `ssh` that keep libvirt's objects in a JSON file and log every call."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from components.cluster import builder_address
from components.config import parse
from providers import prepared_image
from providers.prepared_image import PreparedImageProvider, image_key, volume_name
from tests.conftest import with_keys
from tests.program import DYNAMIC, PROJECT_DIR, load_stack_config, run_program

POOL = "default"
BASE = "/pool/e2e-base.qcow2"
BUILDER_IP = "192.168.56.50"

VIRSH = textwrap.dedent(f"""\
    import json, os, re, sys
    state_path = os.environ["FAKE_LIBVIRT"]
    state = json.load(open(state_path))
    args = [a for a in sys.argv[1:] if a not in ("-q",)]
    args = args[2:] if args[0] == "-c" else args
    state["calls"].append(args)
    verb, rest = args[0], args[1:]
    positional = [a for i, a in enumerate(rest) if not a.startswith("--") and (i == 0 or rest[i - 1] not in ("--pool", "--mac", "--format", "--backing-vol", "--backing-vol-format", "--inputpool"))]
    volumes, domains = state["volumes"], state["domains"]
    code, out = 0, ""
    if verb == "vol-info":
        name = positional[-1]
        code = 0 if name in volumes else 1
        out = f"Allocation:     {{volumes.get(name, 0)}} bytes"
    elif verb == "vol-create-as":
        volumes[positional[1]] = 1000
    elif verb == "vol-create-from":
        name = re.search(r"<name>(.*)</name>", open(positional[1]).read()).group(1)
        volumes[name] = 1234567
    elif verb == "vol-delete":
        code = 0 if volumes.pop(positional[-1], None) is not None else 1
    elif verb == "vol-key":
        out = "/pool/" + positional[-1]
    elif verb == "define":
        xml = open(positional[0]).read()
        name = re.search(r"<name>(.*)</name>", xml).group(1)
        domains[name] = "shut off"
        state["xml"] = xml
    elif verb in ("start", "destroy", "undefine", "domstate"):
        name = positional[0]
        if name not in domains:
            code = 1
        elif verb == "start":
            domains[name] = "running"
        elif verb == "destroy":
            domains[name] = "shut off"
        elif verb == "undefine":
            del domains[name]
        else:
            out = domains[name]
    elif verb == "net-update":
        network, change, section, host = positional[:4]
        if change == "add":
            code = 1 if host in state["reservations"] else 0
            state["reservations"].append(host)
        elif host in state["reservations"]:
            state["reservations"].remove(host)
        else:
            code = 1
    json.dump(state, open(state_path, "w"))
    print(out)
    sys.exit(code)
""")

SSH = textwrap.dedent("""\
    import json, os, re, sys
    state_path = os.environ["FAKE_LIBVIRT"]
    state = json.load(open(state_path))
    command = sys.argv[-1]
    state["ssh"].append(sys.argv[1:])
    # The builder answers once it runs, at the address reserved for it.
    reserved = any("ip='" + sys.argv[-2].split("@")[1] + "'" in host for host in state["reservations"])
    code = 0 if reserved and "running" in state["domains"].values() else 255
    stage = re.search(r"readonly STAGE=(\\S+)", command)
    if code == 0 and stage and stage.group(1) == os.environ.get("FAKE_HANGING_STAGE"):
        import time
        time.sleep(5)
    if code == 0 and stage and stage.group(1) == os.environ.get("FAKE_FAILING_STAGE"):
        print("E: Unable to locate package kubeadm")
        code = 100
    elif code == 0 and stage and stage.group(1) == "seal-image":
        state["domains"] = {name: "shut off" for name in state["domains"]}
    json.dump(state, open(state_path, "w"))
    sys.exit(code)
""")


@pytest.fixture
def libvirt(tmp_path, monkeypatch):
    """The stand-ins on PATH; returns a reader of their state."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, program in (("virsh", VIRSH), ("ssh", SSH)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{program}")
        path.chmod(0o755)
    state = tmp_path / "libvirt.json"
    state.write_text(json.dumps({"volumes": {"e2e-base.qcow2": 500}, "domains": {}, "reservations": [], "calls": [], "ssh": []}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LIBVIRT", str(state))
    monkeypatch.setenv(prepared_image.DOMAIN_TYPE_VARIABLE, "qemu")
    monkeypatch.setattr(prepared_image.time, "sleep", lambda _: None)
    return lambda: json.loads(state.read_text())


def script(stage: str) -> str:
    return f"sudo -n bash -c 'readonly STAGE={stage}\necho {stage}'"


@pytest.fixture
def props(tmp_path) -> dict:
    seed = tmp_path / "image-builder.iso"
    seed.write_bytes(b"seed" * 100)
    inputs = {
        "base_identity": "/images/debian.qcow2 1000 1", "kernel": "/images/vmlinuz", "initrd": "/images/initrd.img",
        # Numbers as the engine hands them back.
        "cmdline": "root=/dev/vda rw", "disk_gib": 20.0,
        "scripts": [script(stage) for stage in ("os-prep", "packages", "preload-images", "seal-image")],
        "uri": "qemu:///system", "pool": POOL, "network": "e2e-k8s", "builder_ip": BUILDER_IP, "base_volume": BASE, "seed_path": str(seed),
        "ssh_user": "kube", "private_key_path": "/keys/id_ed25519", "ssh_options": ["-o", "BatchMode=yes"],
        "boot_timeout_seconds": 60.0,
    }
    return {**inputs, "key": image_key(inputs)}


def test_a_missing_image_is_built_by_a_builder_that_runs_the_scripts_in_order_and_then_goes(libvirt, props):
    result = PreparedImageProvider().create(props)

    state = libvirt()
    name = volume_name(props["key"])
    builder = name.removesuffix(".qcow2") + "-builder"
    assert result.id == name and result.outs["built"] is True
    assert result.outs["volume"] == f"/pool/{name}" and result.outs["size_bytes"] == 1234567
    # Only the image is left: the builder's domain, volumes and DHCP reservation are gone.
    assert state["domains"] == {} and set(state["volumes"]) == {"e2e-base.qcow2", name} and state["reservations"] == []
    assert ["net-update", "e2e-k8s", "add", "ip-dhcp-host",
            f"<host mac='{prepared_image.builder_mac(props['key'])}' ip='{BUILDER_IP}'/>", "--live"] in state["calls"]
    assert ["vol-create-as", POOL, f"{builder}.qcow2", "20G", "--format", "qcow2", "--backing-vol", BASE,
            "--backing-vol-format", "qcow2"] in state["calls"]
    assert ["vol-create-from", POOL] == state["calls"][[c[0] for c in state["calls"]].index("vol-create-from")][:2]
    # The domain boots the image's kernel under the engine's domain type, with its own MAC.
    assert "type=\"qemu\"" in state["xml"] and "<kernel>/images/vmlinuz</kernel>" in state["xml"]
    assert f"address=\"{prepared_image.builder_mac(props['key'])}\"" in state["xml"]
    # Over SSH as the stack's user with its key: first a probe, then each script in order.
    commands = [call[-1] for call in state["ssh"]]
    assert commands == ["true", *props["scripts"]]
    assert state["ssh"][0][:2] == ["-i", "/keys/id_ed25519"] and f"kube@{BUILDER_IP}" in state["ssh"][0]


def test_an_image_already_in_the_pool_is_used_without_a_build(libvirt, props):
    name = volume_name(props["key"])
    PreparedImageProvider().create(props)
    before = len(libvirt()["calls"])

    result = PreparedImageProvider().create(props)

    calls = libvirt()["calls"][before:]
    assert result.id == name and result.outs["built"] is False
    assert {call[0] for call in calls} == {"vol-info", "vol-key"}


def test_a_failed_build_names_its_step_shows_its_output_and_leaves_nothing(libvirt, props, monkeypatch):
    monkeypatch.setenv("FAKE_FAILING_STAGE", "packages")

    with pytest.raises(RuntimeError) as failure:
        PreparedImageProvider().create(props)

    assert "failed at packages (100)" in str(failure.value)
    assert "Unable to locate package kubeadm" in str(failure.value)
    state = libvirt()
    assert state["domains"] == {} and set(state["volumes"]) == {"e2e-base.qcow2"} and state["reservations"] == []
    # No step after the failed one ran.
    assert [call[-1] for call in state["ssh"]][-1] == script("packages")


def test_a_builder_left_by_an_interrupted_build_is_removed_before_the_next(libvirt, props, monkeypatch):
    monkeypatch.setenv("FAKE_FAILING_STAGE", "preload-images")
    with pytest.raises(RuntimeError):
        PreparedImageProvider().create(props)
    monkeypatch.delenv("FAKE_FAILING_STAGE")

    assert PreparedImageProvider().create(props).outs["built"] is True


def test_the_key_covers_what_goes_into_the_image_and_nothing_about_where_it_is_built(props):
    inputs = {k: v for k, v in props.items() if k != "key"}
    assert image_key(inputs) == props["key"]
    for where in ({"uri": "qemu+ssh://kvm/system"}, {"pool": "fast"}, {"network": "other"}, {"builder_ip": "10.0.0.9"},
                  {"boot_timeout_seconds": 5}):
        assert image_key({**inputs, **where}) == props["key"], where
    for what in ({"scripts": inputs["scripts"][:-1]}, {"base_identity": "/images/debian.qcow2 1000 2"}, {"disk_gib": 30}):
        assert image_key({**inputs, **what}) != props["key"], what


def test_a_new_key_is_a_new_image_and_deleting_one_keeps_it_in_the_pool(libvirt, props):
    provider = PreparedImageProvider()
    assert provider.diff(props["key"], props, {**props, "uri": "qemu+ssh://kvm/system"}).changes is False
    new_key = provider.diff(props["key"], props, {**props, "key": "0" * 64})
    assert new_key.changes is True and new_key.replaces == ["key"] and new_key.delete_before_replace is False

    provider.delete(volume_name(props["key"]), props)

    assert libvirt()["calls"] == []


def test_a_builder_that_never_answers_fails_with_the_key_to_raise_and_leaves_nothing(libvirt, props):
    with pytest.raises(RuntimeError, match=r"did not answer over SSH within 0 s \(libvirt.bootTimeoutSeconds\)"):
        PreparedImageProvider().create({**props, "boot_timeout_seconds": 0.0})

    state = libvirt()
    assert state["domains"] == {} and set(state["volumes"]) == {"e2e-base.qcow2"} and state["reservations"] == []


def test_the_builder_takes_the_subnets_last_address_that_no_node_has(ssh_keys):
    config = with_keys(load_stack_config("dev"), ssh_keys)
    assert str(builder_address(parse(config, "dev", PROJECT_DIR))) == "192.168.56.254"
    config["controlPlane"] = {**config["controlPlane"], "ip": "192.168.56.254"}
    assert str(builder_address(parse(config, "dev", PROJECT_DIR))) == "192.168.56.253"


def test_a_step_that_hangs_fails_the_build_within_its_bound(libvirt, props, monkeypatch):
    monkeypatch.setattr(prepared_image, "SCRIPT_TIMEOUT_SECONDS", 0.5)
    hanging = "sudo -n bash -c 'readonly STAGE=packages\nsleep 5'"
    monkeypatch.setenv("FAKE_HANGING_STAGE", "packages")

    with pytest.raises(RuntimeError, match=r"failed at packages \(124\):\nno answer within 0 s"):
        PreparedImageProvider().create({**props, "scripts": [hanging]})

    assert libvirt()["domains"] == {}


def prepared_image_registration(config: dict):
    run = run_program({**config, "image": {**config["image"], "prepared": True}})
    assert run.error is None, run.error
    (image,) = [r for r in run.registrations if r.type == DYNAMIC and r.name == "k8s-prepared-image"]
    return image


def test_a_new_version_or_mirror_is_a_new_image_and_a_new_libvirt_uri_is_not(ssh_keys):
    config = with_keys(load_stack_config("dev"), ssh_keys)
    key = prepared_image_registration(config).inputs["key"]
    others = {
        "version": {**config, "kubernetes": {**config["kubernetes"], "version": "1.36.2"}},
        "mirror": {**config, "mirrors": {"imageRepository": "images.example.test/k8s"}},
        "image": {**config, "image": {**config["image"], "source": "https://example.test/other.qcow2"}},
    }
    for what, other in others.items():
        assert prepared_image_registration(other).inputs["key"] != key, what
    same = {**config, "libvirt": {**config["libvirt"], "uri": "qemu+ssh://kvm.example.test/system"}}
    assert prepared_image_registration(same).inputs["key"] == key
