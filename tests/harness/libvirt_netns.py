"""A throwaway libvirtd inside a private network namespace, for e2e tests.

The machine this runs on has no systemd and must not see any traffic from the
test VMs, so everything runs inside a network namespace this module creates:

    with LibvirtNetns() as ns:
        ns.virsh("net-list", "--all")
        ns.run(["pulumi", "up", "--yes"], cwd=..., capture=False)
        ns.run(["ssh", "debian@192.168.56.10", "hostname"])

On entry it

* creates a uniquely named namespace (``ip netns add``) and brings ``lo`` up,
* starts ``virtlogd -d`` and ``libvirtd -d`` inside it,
* waits until ``virsh -c qemu:///system version`` answers,
* makes sure a dir storage pool named ``default`` exists and is active.

On exit it destroys and undefines the domains, networks, volumes and pools
that appeared while it ran (what was defined before is left alone), stops
libvirtd and virtlogd, kills every process still in the namespace (dnsmasq,
qemu, stray ssh) by PID, and deletes the namespace.

libvirtd runs in system mode (``qemu:///system``) with the system's socket and
pidfile paths, so only one harness can be active on a machine at a time; entry
fails if another libvirtd is already running.

Standard library only. Needs root. :func:`unavailable_reason` tells a test why
the harness cannot run (for a clear skip message).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

__all__ = [
    "HarnessError",
    "LibvirtNetns",
    "Snapshot",
    "libvirt_netns",
    "unavailable_reason",
]

log = logging.getLogger(__name__)

URI = "qemu:///system"
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
DEFAULT_POOL = "default"
POOL_PARENT = Path("/var/lib/libvirt/images")

REQUIRED_TOOLS = (
    "ip",
    "libvirtd",
    "virtlogd",
    "virsh",
    "qemu-system-x86_64",
    "qemu-img",
    "dnsmasq",
)


class HarnessError(RuntimeError):
    """The namespace or libvirtd could not be set up."""


# --------------------------------------------------------------------------
# small process helpers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _live_pid_from(path: Path) -> int | None:
    pid = _read_pidfile(path)
    return pid if pid is not None and _pid_alive(pid) else None


def _kill_pids(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGTERM the given PIDs, wait, then SIGKILL whatever is left."""
    pids = [p for p in dict.fromkeys(pids) if p > 1 and p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in pids if _pid_alive(p)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_pid_alive(p) for p in alive):
            time.sleep(0.1)
    left = [p for p in pids if _pid_alive(p)]
    if left:
        log.warning("processes survived SIGKILL: %s", left)


def _netns_pids(name: str) -> list[int]:
    """PIDs whose network namespace is ``name`` (``ip netns pids``)."""
    res = subprocess.run(
        ["ip", "netns", "pids", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    return [int(p) for p in res.stdout.split() if p.isdigit()]


# --------------------------------------------------------------------------
# availability


def unavailable_reason(*, probe_netns: bool = True) -> str | None:
    """Why the harness cannot run here, or None when it should work.

    With ``probe_netns`` it also adds and deletes a scratch namespace to
    prove ``ip netns add`` is permitted.
    """
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "needs Linux with network namespaces"
    if os.geteuid() != 0:
        return "needs root (ip netns add, libvirtd in system mode)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"missing tools: {', '.join(missing)} "
            "(run tools/install-e2e-deps.sh)"
        )
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing (libvirt needs it for tap devices)"
    for pidfile, daemon in ((LIBVIRTD_PIDFILE, "libvirtd"), (VIRTLOGD_PIDFILE, "virtlogd")):
        pid = _live_pid_from(pidfile)
        if pid is not None:
            return f"{daemon} is already running (pid {pid} from {pidfile})"
    if probe_netns:
        name = f"kvmk-probe-{os.getpid()}-{secrets.token_hex(2)}"
        res = subprocess.run(
            ["ip", "netns", "add", name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            return f"'ip netns add' failed: {res.stderr.strip()}"
        subprocess.run(["ip", "netns", "delete", name], check=False)
    return None


# --------------------------------------------------------------------------
# libvirt object inventory


@dataclass(frozen=True)
class Snapshot:
    """Names of the libvirt objects that exist at one moment."""

    domains: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    # (pool, volume name)
    volumes: frozenset[tuple[str, str]] = frozenset()


@dataclass
class LibvirtNetns:
    """Context manager: libvirtd in a private network namespace.

    Parameters:
        name: namespace name; default ``kvmk-e2e-<pid>-<random>``.
        pool_path: target dir of the ``default`` pool if it must be created;
            default ``/var/lib/libvirt/images/<name>`` (removed on exit).
        start_timeout: seconds to wait for libvirtd to answer.
        workdir: where libvirtd's log and config go; default a temp dir,
            removed on exit unless ``keep_workdir``.
    """

    name: str = field(default_factory=lambda: f"kvmk-e2e-{os.getpid()}-{secrets.token_hex(3)}")
    pool_path: Path | None = None
    start_timeout: float = 60.0
    workdir: Path | None = None
    keep_workdir: bool = False

    uri: str = field(default=URI, init=False)
    _created_ns: bool = field(default=False, init=False, repr=False)
    _created_pool: bool = field(default=False, init=False, repr=False)
    _created_pool_dir: bool = field(default=False, init=False, repr=False)
    _created_workdir: bool = field(default=False, init=False, repr=False)
    _started_pids: list[int] = field(default_factory=list, init=False, repr=False)
    _before: Snapshot = field(default_factory=Snapshot, init=False, repr=False)
    _removed: Snapshot = field(default_factory=Snapshot, init=False, repr=False)

    # ---------------------------------------------------------------- helpers

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["LIBVIRT_DEFAULT_URI"] = self.uri
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = 600,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace (LIBVIRT_DEFAULT_URI is set).

        With ``capture`` stdout/stderr are returned as text; otherwise they
        go to this process's own. ``env`` adds to the environment.
        """
        out = subprocess.PIPE if capture else None
        res = subprocess.run(
            self.command(argv),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL if input is None else None,
            input=input,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=self.env(env),
            check=False,
        )
        if check and res.returncode != 0:
            raise HarnessError(
                f"command failed ({res.returncode}) in netns {self.name}: "
                f"{' '.join(argv)}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside the namespace; the caller owns the process.

        Anything still running in the namespace is killed on exit anyway.
        """
        kwargs.setdefault("env", self.env())
        return subprocess.Popen(self.command(argv), **kwargs)

    def pids(self) -> list[int]:
        """PIDs of every process in the namespace."""
        return _netns_pids(self.name)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run ``virsh -c qemu:///system ARGS`` in the namespace; its stdout."""
        res = self.run(["virsh", "-q", "-c", self.uri, *args], check=check, timeout=timeout)
        return res.stdout

    def snapshot(self) -> Snapshot:
        """What libvirt objects exist now."""
        domains = self._names("list", "--all", "--name")
        networks = self._names("net-list", "--all", "--name")
        pools = self._names("pool-list", "--all", "--name")
        volumes = set()
        for pool in pools:
            res = self.run(
                ["virsh", "-q", "-c", self.uri, "vol-list", pool],
                check=False,
                timeout=60,
            )
            for line in res.stdout.splitlines():
                parts = line.split()
                if parts:
                    volumes.add((pool, parts[0]))
        return Snapshot(
            frozenset(domains), frozenset(networks), frozenset(pools), frozenset(volumes)
        )

    def _names(self, *args: str) -> list[str]:
        res = self.run(["virsh", "-q", "-c", self.uri, *args], check=False, timeout=60)
        return [n.strip() for n in res.stdout.splitlines() if n.strip()]

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> "LibvirtNetns":
        reason = unavailable_reason(probe_netns=False)
        if reason:
            raise HarnessError(f"libvirt netns harness unavailable: {reason}")
        try:
            self._setup()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._teardown()

    def _setup(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
            self._created_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)

        log.info("creating network namespace %s", self.name)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self._created_ns = True
        subprocess.run(
            ["ip", "-n", self.name, "link", "set", "lo", "up"], check=True
        )

        conf = self.workdir / "libvirtd.conf"
        conf.write_text(
            "# written by tests/harness/libvirt_netns.py\n"
            f'log_outputs = "3:file:{self.workdir / "libvirtd.log"}"\n'
        )
        self._start_daemon(["virtlogd", "-d"], VIRTLOGD_PIDFILE)
        libvirtd = ["libvirtd", "-d", "--config", str(conf)]
        if Path("/dev/kvm").exists():
            # KVM opens here but its guests hang, and libvirt's KVM probe then
            # times out on every capabilities call (about 25 s each). libvirtd
            # gets its own mount namespace from `ip netns exec`; hide /dev/kvm
            # there so it probes software emulation only. The host is untouched.
            libvirtd = ["sh", "-c", 'mount --bind /dev/null /dev/kvm && exec "$@"', "sh", *libvirtd]
        self._start_daemon(libvirtd, LIBVIRTD_PIDFILE)
        self._wait_ready()
        self._before = self.snapshot()
        self._ensure_default_pool()

    def _start_daemon(self, argv: list[str], pidfile: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            # a stale pidfile would let us mistake an old PID for ours
            if _live_pid_from(pidfile) is None:
                pidfile.unlink()
        subprocess.run(
            self.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pid = _live_pid_from(pidfile)
            if pid is not None:
                self._started_pids.append(pid)
                log.info("%s running as pid %d in %s", argv[0], pid, self.name)
                return
            time.sleep(0.1)
        raise HarnessError(f"{argv[0]} did not write {pidfile}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            res = self.run(
                ["virsh", "-c", self.uri, "version"], check=False, timeout=30
            )
            if res.returncode == 0:
                return
            last = (res.stderr or res.stdout).strip()
            time.sleep(0.5)
        raise HarnessError(
            f"libvirtd did not answer within {self.start_timeout:.0f}s: {last}"
        )

    def _ensure_default_pool(self) -> None:
        if DEFAULT_POOL not in self._before.pools:
            path = self.pool_path or POOL_PARENT / self.name
            if not path.exists():
                path.mkdir(parents=True)
                self._created_pool_dir = True
            # qemu runs as libvirt-qemu and must traverse into the pool
            path.chmod(0o711)
            self.pool_path = path
            self.virsh("pool-define-as", DEFAULT_POOL, "dir", "--target", str(path))
            self._created_pool = True
        info = self.virsh("pool-info", DEFAULT_POOL)
        if "running" not in info:
            # pool-build creates a missing target dir (e.g. a pool left over
            # from a killed run); harmless when the dir exists
            self.virsh("pool-build", DEFAULT_POOL, check=False)
            self.virsh("pool-start", DEFAULT_POOL)
        # report where the pool really is (a pre-existing pool keeps its own)
        target = ET.fromstring(self.virsh("pool-dumpxml", DEFAULT_POOL)).findtext("target/path")
        if target and not self._created_pool_dir:
            self.pool_path = Path(target)

    def _teardown(self) -> None:
        if self._created_ns:
            if self._daemon_up():
                try:
                    self._remove_new_objects()
                except Exception:  # keep tearing down
                    log.exception("removing libvirt objects failed")
            # stop the daemons we started, then everything else in the ns
            _kill_pids(self._started_pids)
            _kill_pids(_netns_pids(self.name))
            # children that left the namespace cannot exist, but qemu/dnsmasq
            # pidfiles are a cheap second check
            _kill_pids(self._run_pidfile_pids())
            subprocess.run(["ip", "netns", "delete", self.name], check=False)
            self._created_ns = False
            self._remove_state_files()
        if self._created_pool_dir and self.pool_path is not None:
            shutil.rmtree(self.pool_path, ignore_errors=True)
            self._created_pool_dir = False
        if self._created_workdir and self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._created_workdir = False

    def _remove_state_files(self) -> None:
        """Files libvirt leaves behind for the objects we removed."""
        for net in self._removed.networks:
            pidfile = Path("/run/libvirt/network") / f"{net}.pid"
            if pidfile.exists() and _live_pid_from(pidfile) is None:
                pidfile.unlink(missing_ok=True)
            shutil.rmtree(Path("/run/libvirt/network") / net, ignore_errors=True)
        for dom in self._removed.domains:
            Path("/var/log/libvirt/qemu", f"{dom}.log").unlink(missing_ok=True)

    def _daemon_up(self) -> bool:
        return any(_pid_alive(p) for p in self._started_pids) and (
            self.run(["virsh", "-c", self.uri, "version"], check=False, timeout=30).returncode == 0
        )

    def _run_pidfile_pids(self) -> list[int]:
        """PIDs in libvirt's qemu and dnsmasq pidfiles whose netns is ours."""
        pids = []
        ours = self._netns_inode()
        for pattern in ("/run/libvirt/qemu/*.pid", "/run/libvirt/network/*.pid"):
            for pidfile in Path("/").glob(pattern.lstrip("/")):
                pid = _live_pid_from(pidfile)
                if pid is None:
                    continue
                try:
                    theirs = os.stat(f"/proc/{pid}/ns/net").st_ino
                except OSError:
                    continue
                if ours is not None and theirs == ours:
                    pids.append(pid)
        return pids

    def _netns_inode(self) -> int | None:
        try:
            return os.stat(f"/run/netns/{self.name}").st_ino
        except OSError:
            return None

    def _remove_new_objects(self) -> None:
        now = self.snapshot()
        before = self._before
        self._removed = Snapshot(
            now.domains - before.domains,
            now.networks - before.networks,
            now.pools - before.pools,
            now.volumes - before.volumes,
        )
        for dom in sorted(now.domains - before.domains):
            self.virsh("destroy", dom, check=False)
            # plain undefine first; the long form also drops managed save,
            # snapshot metadata and UEFI vars, which plain undefine refuses
            res = self.run(["virsh", "-q", "-c", self.uri, "undefine", dom], check=False)
            if res.returncode != 0 and dom in self._names("list", "--all", "--name"):
                self.virsh(
                    "undefine", dom, "--managed-save", "--snapshots-metadata", "--nvram",
                    check=False,
                )
        for net in sorted(now.networks - before.networks):
            self.virsh("net-destroy", net, check=False)
            self.virsh("net-undefine", net, check=False)
        for pool, vol in sorted(now.volumes - before.volumes):
            self.virsh("vol-delete", vol, "--pool", pool, check=False)
        new_pools = set(now.pools - before.pools)
        if self._created_pool:
            new_pools.add(DEFAULT_POOL)
        for pool in sorted(new_pools):
            self.virsh("pool-destroy", pool, check=False)
            self.virsh("pool-undefine", pool, check=False)
        # transient domains/networks vanish on destroy; check nothing is left
        left = self.snapshot()
        leftovers = (left.domains - before.domains) | (left.networks - before.networks)
        if leftovers:
            log.warning("libvirt objects left after cleanup: %s", sorted(leftovers))


@contextlib.contextmanager
def libvirt_netns(**kwargs) -> Iterator[LibvirtNetns]:
    """Functional form of :class:`LibvirtNetns`."""
    with LibvirtNetns(**kwargs) as ns:
        yield ns
