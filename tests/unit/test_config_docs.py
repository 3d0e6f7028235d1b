"""The README's config tables, the editor JSON Schema and the stack files agree with the declared schema."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from components.config import ConfigError, parse
from components.config_schema import StackConfig
from tests.program import PROJECT_DIR
from tools import config_docs

STACK_FILES = sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))


def test_readme_tables_and_json_schema_are_generated_from_the_schema():
    assert config_docs.drifted() == [], "run .venv/bin/python tools/config_docs.py"


def test_every_key_of_every_stack_file_is_in_the_json_schema():
    schema = json.loads(config_docs.SCHEMA.read_text(encoding="utf-8"))
    config_keys = schema["properties"]["config"]["properties"]
    assert STACK_FILES
    for path in STACK_FILES:
        for key, value in yaml.safe_load(path.read_text(encoding="utf-8"))["config"].items():
            assert key in config_keys, f"{path.name}: {key}"
            definition = schema["$defs"][config_keys[key]["$ref"].rsplit("/", 1)[-1]]
            assert set(value) <= set(definition["properties"]), f"{path.name}: {key}"


def test_every_stack_file_points_editors_at_the_json_schema():
    for path in STACK_FILES:
        assert path.read_text(encoding="utf-8").splitlines()[0] == config_docs.SCHEMA_COMMENT, path.name


def _field(model, alias: str) -> str:
    return next(name for name, field in model.model_fields.items() if field.alias == alias)


def _parsed(settings, key: str):
    """Where parse() puts the value of a table key."""
    section, _, name = key.partition(".")
    top = _field(StackConfig, section)
    derived = {
        "workers.count": lambda: len(settings.workers),
        "controlPlane.count": lambda: len(settings.control_planes),
        "workers.namePrefix": lambda: settings.workers[0].name.removesuffix("1"),
        "controlPlane.allowReplace": lambda: settings.allow_control_plane_replace,
        "registries": lambda: {registry.host: registry for registry in settings.registries},
    }
    if key in derived:
        return derived[key]()
    if not name:
        return getattr(settings, top)
    owner = {"control_plane": settings.control_plane, "workers": settings.workers[0]}.get(top) or getattr(settings, top)
    return getattr(owner, _field(StackConfig.model_fields[top].annotation, name))


def test_each_default_in_the_table_is_what_parse_gives_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default key pair ~/.ssh/id_ed25519
    (tmp_path / ".ssh").mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / ".ssh" / "id_ed25519")], check=True)
    settings = parse({"controlPlane": {"ip": "192.168.56.107"}, "workers": {"firstIp": "192.168.56.123"}}, "solo", tmp_path)
    shown = [
        (key, default) for key, default, _ in config_docs.rows()
        if default not in ("required", "unset") and ".<host>." not in key  # per-entry keys: see the registries tests
    ]
    assert len(shown) > 30
    for key, default in shown:
        assert config_docs.cell(_parsed(settings, key)) == default, key


def test_the_readme_example_error_is_what_parse_reports(dev_config):
    bad = {
        **dev_config,
        "kubernetes": {**dev_config["kubernetes"], "podCidr": "192.168.0.0/16"},
        "workers": {**dev_config["workers"], "cont": 4},
    }
    with pytest.raises(ConfigError) as caught:
        parse(bad, "dev", PROJECT_DIR)
    assert f"```\n{caught.value}\n```" in config_docs.README.read_text(encoding="utf-8")
