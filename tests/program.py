"""Run the Pulumi program under mocks and record every registration.

A recording monitor (a MockMonitor subclass) keeps what plain mocks drop:
parent, dependencies, property dependencies, resource options and which
inputs were sent as secrets. Each run happens in a fresh contextvars.Context,
so runs never share Pulumi's global state.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import io
import json
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from importlib.metadata import version
from typing import Any, Optional

import pulumi
import pycdlib
import yaml
from google.protobuf import json_format


def sdk_internal(module: str, name: str) -> Any:
    """A private name of the Pulumi SDK; this module is the only user of such names."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"tests/program.py relies on the Pulumi SDK's private {module}.{name}, which pulumi "
            f"{version('pulumi')} no longer has: adapt tests/program.py to this SDK"
        ) from exc


MockMonitor = sdk_internal("pulumi.runtime.mocks", "MockMonitor")
_sync_await = sdk_internal("pulumi.runtime.sync_await", "_sync_await")
get_root_resource = sdk_internal("pulumi.runtime.settings", "get_root_resource")
SETTINGS = sdk_internal("pulumi.runtime.settings", "SETTINGS")
run_pulumi_func = sdk_internal("pulumi.runtime.stack", "run_pulumi_func")
serialize_provider = sdk_internal("pulumi.dynamic.dynamic", "serialize_provider")
# The RegisterResourceRequest fields RecordingMonitor reads.
REGISTER_FIELDS = (
    "type", "name", "parent", "dependencies", "propertyDependencies", "object", "ignoreChanges",
    "additionalSecretOutputs", "deletedWith", "deleteBeforeReplace", "provider", "customTimeouts",
)

PROJECT_DIR = Path(__file__).resolve().parents[1]
PROJECT = "kvm-kubeadm"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"

DOMAIN = "libvirt:index/domain:Domain"
NETWORK = "libvirt:index/network:Network"
VOLUME = "libvirt:index/volume:Volume"
COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"
DYNAMIC = "pulumi-python:dynamic:Resource"

# The dev stack's control plane made three behind a VIP: with its workers, a topology with every role.
HIGHLY_AVAILABLE = {"controlPlane": {"name": "k8smaster", "ip": "192.168.56.107", "count": 3, "vip": "192.168.56.100"}}

FAKE_CA_HASH = "sha256:" + "ab" * 32
FAKE_TOKEN = "abcdef.0123456789abcdef"
FAKE_CERTIFICATE_KEY = "c0ffee" * 10 + "c0de"
FAKE_CERTIFICATES_EXPIRE = "2027-12-07T12:00:00Z"
FAKE_LOGIN_TOKEN = "eyJhbGciOiJSUzI1NiJ9.fake-service-account-token"
FAKE_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://192.168.56.107:6443\n  name: kubernetes\n"


def unwrap(value: Any) -> Any:
    """Strip secret markers, recursively."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    raw_inputs: dict[str, Any]
    ignore_changes: list[str]
    additional_secret_outputs: list[str]
    deleted_with: str
    delete_before_replace: bool
    provider: str
    create_timeout: str

    @property
    def inputs(self) -> dict[str, Any]:
        return unwrap(self.raw_inputs)

    @property
    def all_dependencies(self) -> set[str]:
        deps = set(self.dependencies)
        for urns in self.property_dependencies.values():
            deps.update(urns)
        return deps

    @property
    def script(self) -> str:
        """For a remote Command: the rendered script inside `sudo -n bash -c '…'` (an upgrade step's runs on update)."""
        return shlex.split(self.inputs.get("create") or self.inputs["update"])[-1]

    def param(self, name: str) -> str:
        """The value a rendered script assigns to `readonly NAME=…`, unquoted."""
        marker = f"readonly {name}="
        rest = self.script[self.script.index(marker) + len(marker):]
        lexer = shlex.shlex(rest, posix=True)
        lexer.whitespace_split, lexer.commenters = True, ""
        return lexer.get_token() or ""

    @property
    def stage(self) -> Optional[str]:
        """For a remote Command: the stage named in its rendered script."""
        inputs = self.inputs
        match = re.search(r"readonly STAGE=([\w-]+)", inputs.get("create") or inputs.get("update") or inputs.get("delete") or "")
        return match.group(1) if match else None


class Mocks(pulumi.runtime.Mocks):
    """Realistic outputs: a domain's address, a command's stdout per stage, a token."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == COMMAND:
            stage = re.search(r"readonly STAGE=([\w-]+)", outputs.get("create") or "")
            stdout = {"ca-hash": FAKE_CA_HASH + "\n", "kubeconfig": FAKE_KUBECONFIG, "headlamp": FAKE_LOGIN_TOKEN + "\n"}
            outputs["stdout"] = stdout.get(stage.group(1), "") if stage else ""
            outputs["stderr"] = ""
        if args.typ == DYNAMIC and "ttl_seconds" in outputs:
            outputs.update(token=FAKE_TOKEN, expires="2026-11-27T00:00:00Z", expires_epoch=1795737600)
        if args.typ == DYNAMIC and args.name.endswith("-certificate-key"):
            outputs["key"] = FAKE_CERTIFICATE_KEY
        if args.typ == DYNAMIC and args.name.endswith("-certificate-expiry"):
            outputs.update(earliest=FAKE_CERTIFICATES_EXPIRE, renewed=[],
                           expiries={node["name"]: FAKE_CERTIFICATES_EXPIRE for node in outputs["nodes"]})
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                    raw_inputs=json_format.MessageToDict(request.object),
                    ignore_changes=list(request.ignoreChanges),
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    deleted_with=request.deletedWith,
                    delete_before_replace=request.deleteBeforeReplace,
                    provider=request.provider,
                    create_timeout=request.customTimeouts.create,
                )
            )
        return response


@dataclass
class ProgramRun:
    registrations: list[Registration]
    exports: dict[str, pulumi.Output]
    error: Optional[BaseException]
    namespace: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def by_name(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.registrations if r.urn == urn)

    def stage_commands(self) -> list[Registration]:
        """Every stage's Command: remote ones, and the local ones that reach a node over ssh."""
        return self.of_type(COMMAND) + self.of_type(LOCAL_COMMAND)

    def commands(self, stage: str) -> list[Registration]:
        return [r for r in self.stage_commands() if r.stage == stage]

    def longest_chain(self, to: str) -> int:
        """Resources on the longest path through dependencies (depends_on and property dependencies)
        that ends at the resource named `to`."""
        by_urn = {r.urn: r for r in self.registrations}

        @lru_cache(maxsize=None)
        def depth(urn: str) -> int:
            deps = [d for d in by_urn[urn].all_dependencies if d in by_urn]
            return 1 + max((depth(d) for d in deps), default=0)

        return depth(self.by_name(to).urn)

    def resolve(self, value: Any) -> tuple[Any, bool]:
        """(value, is_secret) of an export or Output, awaited for real: no silently skipped apply."""
        output = pulumi.Output.from_input(value)
        return _sync_await(output.future()), _sync_await(output.is_secret())


def read_seed_image(path: str) -> tuple[str, dict[str, str]]:
    """(volume label, {file name: text}) of a cloud-init seed ISO, as a Linux mount shows it."""
    image = pycdlib.PyCdlib()
    image.open(path)
    try:
        label = image.pvd.volume_identifier.decode().strip()
        files = {}
        for child in image.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                content = io.BytesIO()
                image.get_file_from_iso_fp(content, rr_path=f"/{name}")
                files[name] = content.getvalue().decode()
        return label, files
    finally:
        image.close()


def run_serialized_provider(provider: Any, use: str) -> "subprocess.CompletedProcess[str]":
    """Serialise `provider` exactly as pulumi.dynamic does, then load it in a fresh
    interpreter started in the project root (as Pulumi's provider process is) and
    run `use`, Python code that sees it as `provider`."""
    script = "import base64, sys, dill\nprovider = dill.loads(base64.b64decode(sys.stdin.read()))\n" + use
    return subprocess.run(
        [sys.executable, "-c", script], input=serialize_provider(provider),
        capture_output=True, text=True, cwd=PROJECT_DIR, check=False,
    )


def _reported_once(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A failed registration's error reaches every future that waited for it; the run reports it once."""
    if context.get("message") != "Future exception was never retrieved":
        loop.default_exception_handler(context)


def load_stack_config(stack: str) -> dict[str, Any]:
    """The `config:` block of a committed Pulumi.<stack>.yaml, keys without the project prefix."""
    document = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    prefix = f"{PROJECT}:"
    return {key[len(prefix):]: value for key, value in (document.get("config") or {}).items()}


def run_program(config: dict[str, Any], stack: str = "dev", mocks: Optional[Mocks] = None) -> ProgramRun:
    """Run __main__.py under mocks with `config` (as Pulumi passes it: JSON text per key)."""

    def run() -> ProgramRun:
        monitor = RecordingMonitor(mocks or Mocks())
        pulumi.runtime.set_mocks(mocks or Mocks(), project=PROJECT, stack=stack, preview=False, monitor=monitor)
        pulumi.runtime.set_all_config(
            {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
        )
        namespace: dict[str, Any] = {}
        error: Optional[BaseException] = None

        def program() -> None:
            namespace.update(runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__pulumi_program__"))

        try:
            _sync_await(run_pulumi_func(program))
        except Exception as exc:  # the run's error is part of what tests check
            error = exc
            # A failed registration leaves its dependents' tasks, failed, among the SDK's
            # outstanding outputs, which outlive this run: drop them, or the next run fails.
            SETTINGS.outputs.clear()
            asyncio.get_event_loop().set_exception_handler(_reported_once)
        exports = dict(get_root_resource().outputs) if get_root_resource() is not None else {}
        return ProgramRun(monitor.registrations, exports, error, namespace)

    return contextvars.Context().run(run)
