"""The e2e stack: the dev stack changed only where this machine requires it, run by the
real engine inside a LibvirtNetns, with ssh to its nodes and the engine's events of each up."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from components.config import parse
from tests.harness.libvirt_netns import LibvirtNetns, unavailable_reason
from tests.program import PROJECT_DIR, load_stack_config
from tests.pulumi_cli import PulumiProject, copy_program, require, toolchain_missing

IMAGE_DIR = PROJECT_DIR / ".cache" / "guest-image"
IMAGE = IMAGE_DIR / "debian-12-guest.qcow2"
KERNEL, INITRD = IMAGE_DIR / "vmlinuz", IMAGE_DIR / "initrd.img"
# Under emulation the guest kernel distrusts the TSC of QEMU's default (AMD, no constant_tsc)
# CPU model and falls back to HPET: every clock read is then an emulated device access,
# several times slower (benchmarks/guest_clock.py). TCG derives every vCPU's TSC from the
# host's clock, so it is safe to trust.
GUEST_CMDLINE = "root=/dev/vda rw console=ttyS0"
E2E_CMDLINE = f"{GUEST_CMDLINE} tsc=reliable"
STACK = "e2e"
# Bounded well inside CI's 90 minutes, so a hang fails the suite instead of the whole run.
UP_TIMEOUT = 3600


def reporter(request, prefix: str) -> Callable[[str], None]:
    """Writes a line to the terminal as the suite runs, also from a fixture whose output pytest captures."""
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def report(line: str) -> None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"[{prefix}] {line}")

    return report


def require_e2e_prerequisites() -> None:
    """The toolchain, the libvirt harness and the guest image: fails or skips with the reason (see `require`)."""
    require(toolchain_missing())
    require(unavailable_reason())
    require(None if IMAGE.exists() and KERNEL.exists() and INITRD.exists() else "no guest image: run tools/build-guest-image.sh")


def e2e_project(namespace: LibvirtNetns, workdir: Path, config: dict) -> PulumiProject:
    """A copy of the program with a file backend under `workdir`, run inside `namespace`; its e2e stack
    made with `config`."""
    project = PulumiProject(
        copy_program(workdir / "program"), workdir / "state", namespace.run,
        # Nested KVM does not work here: software emulation.
        extra_env={"TERRAFORM_LIBVIRT_TEST_DOMAIN_TYPE": "qemu"},
    )
    project.state.mkdir()
    project.set_stack_config(STACK, config)
    project.pulumi("stack", "init", STACK)
    return project


def e2e_config(keys, stack: str = "dev") -> dict:
    """A committed stack (the dev stack unless named), changed only where this machine requires it."""
    config = load_stack_config(stack)
    private, public = keys
    config["image"] = {**config.get("image", {}), "source": str(IMAGE), "kernel": str(KERNEL), "initrd": str(INITRD),
                       "cmdline": E2E_CMDLINE}
    config["ssh"] = {"user": "kube", "privateKeyPath": str(private), "publicKeyPath": str(public)}
    config["stages"] = "os-prep"
    # Four guests boot at once under software emulation on two cores: minutes, not seconds.
    config["libvirt"] = {"bootTimeoutSeconds": 1200}
    return config


@dataclass
class Up:
    """One `pulumi up`: how long it took, its output and the engine's events."""

    seconds: float
    returncode: int
    stderr: str
    events: list[dict]

    def durations(self) -> dict[str, int]:
        """Seconds from each resource's step start to its outputs, by resource name; to its
        failure for a step that failed, named so."""
        started, took = {}, {}
        for event in self.events:
            if "resourcePreEvent" in event:
                started[event["resourcePreEvent"]["metadata"]["urn"]] = event["timestamp"]
            elif end := event.get("resOutputsEvent") or event.get("resOpFailedEvent"):
                urn = end["metadata"]["urn"]
                if urn in started:
                    failed = " (failed)" if "resOpFailedEvent" in event else ""
                    took[urn.split("::")[-1] + failed] = event["timestamp"] - started[urn]
        return took

    def diagnostics(self) -> str:
        """Every diagnostic message of the run but the debug ones: errors, warnings and the
        commands' output (the providers' ephemeral messages)."""
        return "".join(event["diagnosticEvent"]["message"] for event in self.events
                       if event.get("diagnosticEvent", {}).get("severity", "debug") != "debug")


class E2eStack:
    """The running e2e stack: its namespace, project and a way to reach the nodes."""

    def __init__(self, namespace: LibvirtNetns, project: PulumiProject, config: dict, keys, report):
        self.namespace, self.project, self.config, self.keys, self.report = namespace, project, config, keys, report
        self.before = namespace.snapshot()  # libvirt objects that are not ours
        self.outputs: list[str] = []  # everything pulumi printed, for the secrets check

    @property
    def settings(self):
        return parse(self.config, STACK, self.project.directory)

    def set_config(self, config: dict) -> None:
        self.config = config
        self.project.set_stack_config(STACK, config)

    def ssh(self, ip: str, command: str, stdin: str | None = None, check: bool = True):
        argv = ["ssh", "-i", str(self.keys[0]), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                f"kube@{ip}", command]
        return self.namespace.run(argv, check=check, input=stdin, timeout=300)

    def pulumi(self, *args: str, check: bool = True, timeout: float = 900):
        result = self.project.pulumi(*args, check=False, timeout=timeout)
        self.outputs.append(result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def up(self, *args: str, check: bool = True) -> Up:
        """`pulumi up` with its engine events (`--json` streams them, one per line)."""
        start = time.monotonic()
        result = self.pulumi("up", "--yes", "--skip-preview", "--json", *args, check=False, timeout=UP_TIMEOUT)
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        up = Up(time.monotonic() - start, result.returncode, result.stderr, events)
        if check and up.returncode != 0:
            raise AssertionError(f"pulumi up failed ({up.returncode}):\n{up.diagnostics()[-8000:]}\n{up.stderr}")
        return up

    def set_workers(self, count: int) -> None:
        self.set_config({**self.config, "workers": {**self.config["workers"], "count": count}})

    def planned_steps(self) -> Counter:
        preview = json.loads(self.pulumi("preview", "--json").stdout)
        return Counter((step["op"], step["urn"].split("::")[-1]) for step in preview["steps"] if step["op"] != "same")

    def stray_processes(self) -> set[str]:
        """Names of processes in the namespace other than the harness's own libvirtd and virtlogd."""
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in self.namespace.pids()
                 if Path(f"/proc/{pid}/comm").exists()}
        return names - {"libvirtd", "virtlogd"}
