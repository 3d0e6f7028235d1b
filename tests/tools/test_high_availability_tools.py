"""The highly available control plane's configs, judged by the real tools, for the committed `ha` stack.

haproxy and keepalived are the host's Debian 12 packages (haproxy 2.6, keepalived 2.2.7, from
tools/install-e2e-deps.sh; the Ubuntu guests get 2.8 and 2.2.8): each checks the file
scripts/load-balancer.sh writes on every control plane, as that script does; haproxy also runs
it against stand-in API servers, and keepalived runs it on three control planes, one namespace
each. kubeadm (tools/build-toolchain.sh) checks the leader's init, each joining control plane's join, the upload-certs stage's and the control planes' upgrade configs.

Tools that need nothing of a node run in `unshare -rn`, as in test_real_tools.py. The others run in
a network namespace of the test's own (`ip netns add`, deleted afterwards) that stands for the node
subnet as a control plane sees it: a veth end holding every control plane's address, whose peer is
the gateway and the default route. Nothing in it leads out of the namespace.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components import kubeadm, load_balancer
from components.scripts import render
from providers.bootstrap_token import generate_token
from tests.program import load_stack_config
from tests.pulumi_cli import require
from tests.tools.test_real_tools import BIN, need, offline, stack_settings

pytestmark = pytest.mark.tools

STACK = "ha"
# Stand-ins for the secrets the stages pass on stdin, in the formats kubeadm checks.
CA_HASH = "sha256:" + "ab" * 32
CERTIFICATE_KEY = "0123456789abcdef" * 4
# The veth pair of the node subnet: the node's end (what @INTERFACE@ becomes) and the gateway's.
NODE_LINK, GATEWAY_LINK = "kvmk-node", "kvmk-gw"
# A node's kubeadm settings that need kubeadm's patches, so that their `patches` get judged too.
SLOWER_PROBES = {"readinessProbePeriodSeconds": 10, "livenessProbeFailureThreshold": 30}

# A stand-in API server: TLS on ADDRESS:PORT, GET /readyz answered with STATUS, anything else 404.
FAKE_API_SERVER = '''
import http.server, ssl, sys
cert, key, address, port, status = sys.argv[1:]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(status) if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = http.server.HTTPServer((address, int(port)), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
'''


def host_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    require(None if path else f"{name} is not installed: run tools/install-e2e-deps.sh")
    return path


@pytest.fixture(scope="module")
def settings(ssh_keys):
    return stack_settings(STACK, ssh_keys)


@pytest.fixture(scope="module")
def kubeadm_bin(settings) -> str:
    need("kubeadm")
    version = offline(str(BIN / "kubeadm"), "version", "-o", "short").stdout.strip()
    # The nodes' kubeadm is the configured version; upload-certs.sh writes what it reports.
    assert version == f"v{settings.kubernetes.version}", version
    return str(BIN / "kubeadm")


@dataclass
class Netns:
    name: str

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(*argv), capture_output=True, text=True, check=False, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def node_subnet(settings):
    require(None if os.geteuid() == 0 else "network namespaces (ip netns add) need root")
    host_tool("ip")
    netns = Netns(f"kvmk-tools-ha-{os.getpid()}")
    subprocess.run(["ip", "netns", "add", netns.name], check=True)
    try:
        def ip(*args: str) -> None:
            subprocess.run(["ip", "-n", netns.name, *args], check=True, capture_output=True)

        prefix = settings.network.subnet.prefixlen
        ip("link", "add", NODE_LINK, "type", "veth", "peer", "name", GATEWAY_LINK)
        for link in ("lo", NODE_LINK, GATEWAY_LINK):
            ip("link", "set", link, "up")
        for node in settings.control_planes:
            ip("addr", "add", f"{node.ip}/{prefix}", "dev", NODE_LINK)
        ip("addr", "add", f"{settings.network.gateway}/{prefix}", "dev", GATEWAY_LINK)
        ip("route", "add", "default", "via", str(settings.network.gateway), "dev", NODE_LINK)
        yield netns
    finally:
        subprocess.run(["ip", "netns", "delete", netns.name], check=False)


# haproxy


def config_lines(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines()]


def test_haproxy_accepts_the_config_and_checks_each_control_planes_api_server(settings, tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(load_balancer.haproxy_config(settings))
    result = offline(host_tool("haproxy"), "-c", "-f", str(config))
    assert result.stdout.strip() == "Configuration file is valid", result.stdout
    # haproxy -c prints its [WARNING]s and [NOTICE]s on stderr, and nothing for a config it fully accepts.
    assert result.stderr == "", result.stderr
    lines = config_lines(config.read_text())
    assert f"bind *:{kubeadm.LOAD_BALANCER_PORT}" in lines
    servers = [line.split() for line in lines if line.startswith("server ")]
    addresses = [f"{node.ip}:{kubeadm.API_SERVER_PORT}" for node in settings.control_planes]
    # check: health-checked; check-ssl: the check speaks TLS, as the API server does.
    assert [(name, address, options[:2]) for _, name, address, *options in servers if "backup" not in options] == [
        (node.name, address, ["check", "check-ssl"]) for node, address in zip(settings.control_planes, addresses)]
    # The fallbacks for when none passes: the same API servers, unchecked.
    assert [(name, address, options) for _, name, address, *options in servers if "backup" in options] == [
        (f"{node.name}-unchecked", address, ["backup"]) for node, address in zip(settings.control_planes, addresses)]
    assert "http-check send meth GET uri /readyz" in lines and "http-check expect status 200" in lines


@pytest.mark.parametrize("good, broken, complaint", [
    ("verify none", "verfy none", "unknown keyword 'verfy'"),
    ("default_backend apiserver", "default_backend apiservers", "unable to find required default_backend"),
])
def test_haproxy_refuses_a_broken_config(settings, tmp_path, good, broken, complaint):
    """The check can fail: a misspelt server keyword, a backend that is not there."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(load_balancer.haproxy_config(settings).replace(good, broken))
    result = offline(host_tool("haproxy"), "-c", "-f", str(config), check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


class LoadBalancer:
    """The rendered haproxy config running in the node subnet, with stand-in API servers that the
    test starts and stops; haproxy's view of its servers from a stats socket of the test's own."""

    def __init__(self, netns: Netns, settings, directory: Path):
        self.netns, self.settings, self.directory = netns, settings, directory
        self.processes: list[subprocess.Popen] = []
        self.api_servers: dict[str, subprocess.Popen] = {}
        self.socket = directory / "haproxy.sock"
        self.start_fake = fake_api_servers(directory)

    def start_api_server(self, node, status: int) -> None:
        process = self.start_fake(self.netns, str(node.ip), kubeadm.API_SERVER_PORT, status)
        self.processes.append(process)
        self.api_servers[node.name] = process

    def stop_api_server(self, node) -> None:
        process = self.api_servers.pop(node.name)
        process.terminate()
        process.wait(timeout=10)

    def start_haproxy(self) -> None:
        config = self.directory / "haproxy.cfg"
        config.write_text(load_balancer.haproxy_config(self.settings))
        # A second file adds the stats socket; -db keeps haproxy in the foreground, despite `daemon`.
        stats = self.directory / "stats.cfg"
        stats.write_text(f"global\n    stats socket {self.socket} mode 600 level admin\n")
        log = (self.directory / "haproxy.log").open("w")
        self.processes.append(subprocess.Popen(
            self.netns.argv(host_tool("haproxy"), "-db", "-f", str(config), "-f", str(stats)),
            stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: self.socket.exists(), 10, "haproxy's stats socket")

    def servers(self) -> dict[str, tuple[str, str]]:
        """Each server's status and the outcome of its last check (`show stat`)."""
        with socket.socket(socket.AF_UNIX) as stats:
            stats.connect(str(self.socket))
            stats.sendall(b"show stat\n")
            answer = b"".join(iter(lambda: stats.recv(65536), b"")).decode()
        rows = csv.DictReader(answer.removeprefix("# ").splitlines())
        return {row["svname"]: (row["status"], f"{row['check_status']} {row['check_code']}".strip())
                for row in rows if row["pxname"] == "apiserver" and row["svname"] not in ("FRONTEND", "BACKEND")
                and not row["svname"].endswith("-unchecked")}

    def wait_until_servers(self, expected: dict[str, tuple[str, str]], timeout: float) -> None:
        wait_for(lambda: self.servers() == expected, timeout, f"haproxy's servers {expected}, last {self.servers()}")

    def requests_through_the_frontend(self, count: int) -> list[str]:
        """HTTP status of GET /readyz through haproxy, as keepalived's check asks it; 000: no answer."""
        url = f"https://127.0.0.1:{kubeadm.LOAD_BALANCER_PORT}/readyz"
        return [self.netns.run("curl", "-sk", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", url,
                               check=False).stdout for _ in range(count)]

    def check_script(self) -> int:
        """The exit code of keepalived's check script on this node."""
        script = self.directory / "check-apiserver.sh"
        script.write_text(load_balancer.check_script())
        return self.netns.run("sh", str(script), check=False).returncode

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def fake_api_servers(directory: Path):
    """A function that starts a stand-in API server in a namespace, with a certificate made here."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=kube-apiserver",
                    "-keyout", str(directory / "api.key"), "-out", str(directory / "api.crt")],
                   check=True, capture_output=True)
    (directory / "api-server.py").write_text(FAKE_API_SERVER)

    def start(netns: Netns, address: str, port: int, status: int) -> subprocess.Popen:
        process = subprocess.Popen(
            netns.argv(sys.executable, str(directory / "api-server.py"), str(directory / "api.crt"),
                       str(directory / "api.key"), address, str(port), str(status)),
            stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "ready\n", f"the stand-in API server on {address}:{port} did not start"
        return process
    return start


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.5)


@pytest.fixture
def load_balancer_on_node(node_subnet, settings, tmp_path):
    host_tool("openssl")
    host_tool("curl")
    running = LoadBalancer(node_subnet, settings, tmp_path)
    try:
        yield running
    finally:
        running.close()


# A server that answers its check: UP; one that answers 500 or refuses: DOWN.
UP, NOT_READY, REFUSED = ("UP", "L7OK 200"), ("DOWN", "L7STS 500"), ("DOWN", "L4CON")
# `fall 3` checks 5 s apart, and some slack on this busy machine.
OUT_AFTER_SECONDS = 3 * 5 + 10


def test_haproxy_passes_the_api_only_to_control_planes_whose_api_server_is_ready(load_balancer_on_node, settings):
    leader, second, third = settings.control_planes
    lb = load_balancer_on_node
    lb.start_api_server(leader, 200)
    lb.start_api_server(second, 500)  # third: no API server at all
    lb.start_haproxy()
    # haproxy starts each server UP, out with its first failed check; a passed one keeps it.
    lb.wait_until_servers({leader.name: UP, second.name: NOT_READY, third.name: REFUSED}, 15)
    # Round robin over the three would reach the 500 or nothing; only the ready one is used.
    assert lb.requests_through_the_frontend(6) == ["200"] * 6
    assert lb.check_script() == 0
    lb.stop_api_server(leader)
    lb.wait_until_servers({leader.name: REFUSED, second.name: NOT_READY, third.name: REFUSED}, OUT_AFTER_SECONDS)
    # No API server ready behind this node's haproxy: keepalived's check fails, the node loses priority.
    assert lb.check_script() != 0


def test_haproxy_still_passes_the_api_on_when_no_api_server_is_ready(load_balancer_on_node, settings):
    """A loaded host's API servers fail /readyz on a slow etcd while they serve most requests (a
    real run: the lone leader out, NOSRV, the second control plane's join stalled); then haproxy
    uses the unchecked fallbacks rather than closing every connection."""
    lb = load_balancer_on_node
    for node in settings.control_planes:
        lb.start_api_server(node, 500)
    lb.start_haproxy()
    lb.wait_until_servers({node.name: NOT_READY for node in settings.control_planes}, 15)
    assert lb.requests_through_the_frontend(6) == ["500"] * 6
    assert lb.check_script() != 0


def test_haproxy_sends_new_connections_elsewhere_while_a_lost_control_plane_is_not_yet_out(
        load_balancer_on_node, settings):
    leader, second, third = settings.control_planes
    lb = load_balancer_on_node
    lb.start_api_server(leader, 200)
    lb.start_api_server(second, 200)
    lb.start_haproxy()
    lb.wait_until_servers({leader.name: UP, second.name: UP, third.name: REFUSED}, 15)
    lb.stop_api_server(leader)
    # Well inside the 10 s at least before the leader's third failed check.
    answers = lb.requests_through_the_frontend(6)
    assert lb.servers()[leader.name][0].startswith("UP"), "the leader went out before the requests: too slow here"
    assert answers == ["200"] * 6, answers


# keepalived


@pytest.fixture
def keepalived_dir(tmp_path) -> Path:
    """What /etc/keepalived holds on a node after load-balancer.sh: the check script, root's only (0700)."""
    require(None if Path(load_balancer.CHECK_SCRIPT).parent.is_dir() else
            f"no {Path(load_balancer.CHECK_SCRIPT).parent} to mount over: is keepalived installed?")
    directory = tmp_path / "etc-keepalived"
    directory.mkdir(mode=0o755)
    script = directory / Path(load_balancer.CHECK_SCRIPT).name
    script.write_text(load_balancer.check_script())
    script.chmod(0o700)
    return directory


def keepalived_test(netns: Netns, keepalived_dir: Path, config: str, tmp_path: Path,
                    interface: str = NODE_LINK) -> subprocess.CompletedProcess:
    """`keepalived -t -f FILE` as load-balancer.sh runs it, the node's interface in place of @INTERFACE@.

    keepalived tests that the interface exists (the node subnet's veth end here) and that the check
    script exists and, with enable_script_security, that neither it nor a directory above it is
    writable by anyone but root. The script's path stays /etc/keepalived/check-apiserver.sh: a mount
    namespace of its own puts keepalived_dir there, leaving the host's /etc/keepalived as it is.
    """
    path = tmp_path / "keepalived.conf"
    path.write_text(config.replace(load_balancer.INTERFACE, interface))
    return netns.run(*keepalived_over(keepalived_dir, "-t", "-f", str(path)), check=False)


def keepalived_over(keepalived_dir: Path, *args: str) -> tuple[str, ...]:
    """keepalived with `args`, in a mount namespace of its own where keepalived_dir is /etc/keepalived."""
    mount_and_run = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", mount_and_run, "sh",
            str(keepalived_dir), str(Path(load_balancer.CHECK_SCRIPT).parent), host_tool("keepalived"), *args)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_keepalived_accepts_each_control_planes_config(node_subnet, keepalived_dir, settings, tmp_path, index):
    node = settings.control_planes[index]
    config = load_balancer.keepalived_config(settings, node)
    assert "unicast_peer" in config, "three control planes talk VRRP over unicast"
    result = keepalived_test(node_subnet, keepalived_dir, config, tmp_path)
    # keepalived -t prints nothing for a config it fully accepts: every line is a complaint
    # (a WARNING, or a part it drops: "Disabling track script ..." even exits 5).
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stdout + result.stderr


def test_keepalived_accepts_a_lone_control_planes_config(node_subnet, keepalived_dir, ssh_keys, tmp_path):
    """One control plane with a VIP (a cluster to grow later) has no peers: VRRP over multicast."""
    config_of_one = stack_settings(STACK, ssh_keys, controlPlane={**load_stack_config(STACK)["controlPlane"], "count": 1})
    config = load_balancer.keepalived_config(config_of_one, config_of_one.control_plane)
    assert "unicast_peer" not in config
    result = keepalived_test(node_subnet, keepalived_dir, config, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stdout + result.stderr


@pytest.mark.parametrize("breakage, complaint", [
    ("interface left as @INTERFACE@", "interface @INTERFACE@ for vrrp_instance apiserver doesn't exist"),
    ("check script writable by others", "Disabling track script check_apiserver due to insecure"),
    ("no check script", "Disabling track script check_apiserver since not found/accessible"),
])
def test_keepalived_refuses_a_broken_config_or_check_script(
        node_subnet, keepalived_dir, settings, tmp_path, breakage, complaint):
    """The check can fail, and judges what load-balancer.sh leaves on the node: the interface it puts in
    and the check script it installs with mode 0700."""
    config = load_balancer.keepalived_config(settings, settings.control_plane)
    script = keepalived_dir / Path(load_balancer.CHECK_SCRIPT).name
    interface = NODE_LINK
    if breakage.startswith("interface"):
        interface = load_balancer.INTERFACE
    elif breakage.startswith("check script writable"):
        script.chmod(0o777)
    else:
        script.unlink()
    result = keepalived_test(node_subnet, keepalived_dir, config, tmp_path, interface)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and complaint in output, output


# keepalived running: the VIP among three control planes, each a network namespace of its own on one
# bridge (in a namespace of its own too), with the rendered config and check script. The check asks
# https://127.0.0.1:8443/readyz, as on a node: a stand-in there answers for the node's haproxy.

# Three missed adverts (1 s apart) and keepalived's skew; a failing check: `fall 3` checks 3 s apart;
# some slack on this busy machine.
LOST_HOLDER_SECONDS = 3 + 10
FAILED_CHECK_SECONDS = 3 * 3 + 10


class ControlPlaneNetwork:
    """The control planes' keepalived on a bridge: start, lose a node, ask who holds the VIP."""

    def __init__(self, settings, directory: Path, keepalived_dir: Path):
        self.settings, self.directory, self.keepalived_dir = settings, directory, keepalived_dir
        prefix = f"kvmk-vrrp-{os.getpid()}"
        self.switch = Netns(f"{prefix}-switch")
        self.nodes = {node.name: Netns(f"{prefix}-{index}") for index, node in enumerate(settings.control_planes)}
        self.ready_apis: dict[str, subprocess.Popen] = {}
        self.keepalived: list[subprocess.Popen] = []
        self.start_fake = fake_api_servers(directory)

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.switch.name], check=True)
        self.switch.run("ip", "link", "add", "bridge", "type", "bridge")
        self.switch.run("ip", "link", "set", "bridge", "up")
        prefix = self.settings.network.subnet.prefixlen
        for index, node in enumerate(self.settings.control_planes):
            netns = self.nodes[node.name]
            subprocess.run(["ip", "netns", "add", netns.name], check=True)
            port = f"port{index}"
            self.switch.run("ip", "link", "add", port, "type", "veth", "peer", "name", NODE_LINK, "netns", netns.name)
            self.switch.run("ip", "link", "set", port, "master", "bridge", "up")
            for argv in (("link", "set", "lo", "up"), ("link", "set", NODE_LINK, "up"),
                         ("addr", "add", f"{node.ip}/{prefix}", "dev", NODE_LINK)):
                netns.run("ip", *argv)

    def start(self, node) -> None:
        """The node's ready API behind its haproxy, then its keepalived."""
        netns, here = self.nodes[node.name], self.directory / node.name
        here.mkdir(exist_ok=True)
        self.pass_check(node)
        config = here / "keepalived.conf"
        config.write_text(load_balancer.keepalived_config(self.settings, node).replace(load_balancer.INTERFACE, NODE_LINK))
        log = (here / "keepalived.log").open("w")
        self.keepalived.append(subprocess.Popen(
            netns.argv(*keepalived_over(self.keepalived_dir, "--dont-fork", "--log-console", "--vrrp", "-f", str(config),
                                        "-p", str(here / "keepalived.pid"), "-r", str(here / "vrrp.pid"))),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def pass_check(self, node) -> None:
        """The node's haproxy serves a ready API (a stand-in for both)."""
        self.ready_apis[node.name] = self.start_fake(self.nodes[node.name], "127.0.0.1", kubeadm.LOAD_BALANCER_PORT, 200)

    def fail_check(self, node) -> None:
        """The node's haproxy no longer serves a ready API."""
        ready_api = self.ready_apis.pop(node.name)
        ready_api.terminate()
        ready_api.wait(timeout=10)

    def lose(self, node) -> None:
        """The node is gone from the network, as a VM shut off is: no advert, no answer."""
        self.nodes[node.name].run("ip", "link", "set", NODE_LINK, "down")

    def holders(self) -> list[str]:
        address = f" {self.settings.vip}/"
        return [name for name, netns in self.nodes.items()
                if address in netns.run("ip", "-o", "-4", "addr", "show", "dev", NODE_LINK).stdout]

    def wait_for_holders(self, expected: list[str], timeout: float) -> float:
        """Seconds until exactly `expected` hold the VIP."""
        start = time.monotonic()
        wait_for(lambda: self.holders() == expected, timeout, f"VIP on {expected} (on {self.holders()}); keepalived's "
                 f"logs in {self.directory}")
        return time.monotonic() - start

    def close(self) -> None:
        for ready_api in self.ready_apis.values():
            ready_api.terminate()
        # keepalived forks its VRRP child: each one's whole session goes.
        for process in self.keepalived:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in (*self.ready_apis.values(), *self.keepalived):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for netns in (*self.nodes.values(), self.switch):
            subprocess.run(["ip", "netns", "delete", netns.name], check=False, capture_output=True)


@pytest.fixture
def control_plane_network(settings, keepalived_dir, tmp_path):
    require(None if os.geteuid() == 0 else "network namespaces (ip netns add) need root")
    for tool in ("ip", "openssl", "curl", "keepalived"):
        host_tool(tool)
    network = ControlPlaneNetwork(settings, tmp_path, keepalived_dir)
    try:
        network.create()
        for node in settings.control_planes:
            network.start(node)
        # The leader's priority is the highest; the others stay backups.
        network.wait_for_holders([settings.control_plane.name], 30)
        yield network
    finally:
        network.close()


def test_keepalived_moves_the_vip_to_the_next_control_plane_when_its_holder_is_lost(control_plane_network, settings):
    leader, second, third = settings.control_planes
    network = control_plane_network
    network.lose(leader)
    moved = network.wait_for_holders([second.name], LOST_HOLDER_SECONDS)
    print(f"the VIP moved to {second.name} {moved:.1f} s after {leader.name} was lost")
    network.lose(second)
    network.wait_for_holders([third.name], LOST_HOLDER_SECONDS)


def test_keepalived_moves_the_vip_off_a_holder_whose_check_fails_and_back_when_it_passes(
        control_plane_network, settings):
    leader, second, _ = settings.control_planes
    network = control_plane_network
    network.fail_check(leader)
    # 150 - 50 is below the second's 149.
    network.wait_for_holders([second.name], FAILED_CHECK_SECONDS)
    network.pass_check(leader)
    network.wait_for_holders([leader.name], FAILED_CHECK_SECONDS)


# kubeadm


def validated(kubeadm_bin: str, config: Path, netns: Netns | None = None) -> None:
    argv = (kubeadm_bin, "config", "validate", "--config", str(config))
    result = netns.run(*argv) if netns else offline(*argv)
    # kubeadm prints "ok", and its warnings (klog: W<date> ...) on stderr.
    assert result.stdout.strip() == "ok" and result.stderr == "", result.stderr


@pytest.mark.parametrize("probes", [{}, SLOWER_PROBES], ids=["kubeadms-probes", "with-patches"])
def test_kubeadm_validates_the_leaders_init_and_each_control_planes_join_and_upgrade(
        kubeadm_bin, ssh_keys, tmp_path, probes):
    settings = stack_settings(STACK, ssh_keys, kubernetes=probes)
    assert bool(kubeadm.static_pod_patches(settings.kubernetes)) == bool(probes)
    init = tmp_path / "init.yaml"
    init.write_text(kubeadm.init_config(settings, generate_token()))
    validated(kubeadm_bin, init)
    for node in settings.control_planes[1:]:
        join = tmp_path / f"join-{node.name}.yaml"
        join.write_text(kubeadm.control_plane_join_config(settings, node, generate_token(), CA_HASH, CERTIFICATE_KEY))
        (document,) = yaml.safe_load_all(join.read_text())
        assert document["controlPlane"]["certificateKey"] == CERTIFICATE_KEY
        validated(kubeadm_bin, join)
    # `kubeadm config validate` takes an UpgradeConfiguration too; a control plane's has `node`.
    upgrade = tmp_path / "upgrade.yaml"
    upgrade.write_text(kubeadm.upgrade_config(settings.kubernetes, control_plane=True))
    assert "node" in yaml.safe_load(upgrade.read_text())
    validated(kubeadm_bin, upgrade)


def test_kubeadm_refuses_a_join_with_a_malformed_certificate_key(kubeadm_bin, settings, tmp_path):
    """The check can fail: kubeadm checks the certificate key's form (64 hex digits)."""
    join = tmp_path / "join.yaml"
    join.write_text(kubeadm.control_plane_join_config(
        settings, settings.control_planes[1], generate_token(), CA_HASH, CERTIFICATE_KEY[:-1]))
    result = offline(kubeadm_bin, "config", "validate", "--config", str(join), check=False)
    assert result.returncode != 0 and "certificateKey" in result.stderr, result.stderr


def upload_certs_config(kubeadm_bin: str, tmp_path: Path) -> Path:
    """The config file scripts/upload-certs.sh writes, and its kubeadm call.

    The rendered stage is sourced and its main run, with the key on stdin as the stage gets it; a
    kubeadm function answers `version` with the real kubeadm and records the rest, write_secret_file
    keeps the file here. In a mount namespace of its own with a tmpfs on /var/log, where it logs."""
    script = tmp_path / "upload-certs.sh"
    script.write_text(render("upload-certs", "k8smaster", {"KUBEADM_API": kubeadm.KUBEADM_API}))
    config, call = tmp_path / "upload-certs.yaml", tmp_path / "kubeadm-call"
    run_main = f"""
        mount -t tmpfs tmpfs /var/log
        source {shlex.quote(str(script))}
        write_secret_file() {{ cat >{shlex.quote(str(config))}; echo "$1" >{shlex.quote(str(config))}.path; }}
        kubeadm() {{
          if [[ $1 == version ]]; then {shlex.quote(kubeadm_bin)} "$@"; else echo "$@" >{shlex.quote(str(call))}; fi
        }}
        main
    """
    subprocess.run(["unshare", "-rn", "--mount", "bash", "-c", f"set -euo pipefail; {run_main}"],
                   input=f"{CERTIFICATE_KEY}\n", env={"KVMK_SOURCE_ONLY": "1", "PATH": "/usr/bin:/bin"},
                   check=True, capture_output=True, text=True)
    written_to = Path(f"{config}.path").read_text().strip()
    assert call.read_text().split() == ["init", "phase", "upload-certs", "--upload-certs", "--config", written_to]
    return config


def test_kubeadm_takes_the_upload_certs_config_and_its_key(kubeadm_bin, node_subnet, settings, tmp_path):
    config = upload_certs_config(kubeadm_bin, tmp_path)
    text = config.read_text()
    init, cluster = yaml.safe_load_all(text)
    assert init == {"apiVersion": kubeadm.KUBEADM_API, "kind": "InitConfiguration", "certificateKey": CERTIFICATE_KEY}
    assert cluster["kubernetesVersion"] == f"v{settings.kubernetes.version}"
    # In the node subnet, not `unshare -rn`: the file names no address for the API server, so kubeadm
    # takes the default route's, as it does on the leader. Without one, validate warns and the phase
    # itself stops: "cannot use "0.0.0.0" as the bind address for the API Server".
    validated(kubeadm_bin, config, node_subnet)
    dry_run_dir = tmp_path / "dry-run"
    dry_run_dir.mkdir()
    def dry_run_phase(*phase: str) -> subprocess.CompletedProcess:
        return node_subnet.run("env", f"KUBEADM_INIT_DRYRUN_DIR={dry_run_dir}", kubeadm_bin, "init", "phase",
                               *phase, "--config", str(config), "--dry-run")

    # What the leader's init left, which the phase reads: the certificates and admin.conf.
    dry_run_phase("certs", "all")
    dry_run_phase("kubeconfig", "admin")
    # The stage's call, as a dry run: kubeadm's fake client takes the Secret it would create.
    result = dry_run_phase("upload-certs", "--upload-certs")
    assert 'Storing the certificates in Secret "kubeadm-certs"' in result.stdout, result.stdout
    assert f"Using certificate key:\n{CERTIFICATE_KEY}" in result.stdout, result.stdout


def test_kubeadm_init_dry_run_puts_the_vip_in_the_certificate_and_the_kubeconfigs(kubeadm_bin, settings, tmp_path):
    """A whole `kubeadm init --dry-run`: it writes what init would into KUBEADM_INIT_DRYRUN_DIR."""
    host_tool("openssl")
    init = tmp_path / "init.yaml"
    init.write_text(kubeadm.init_config(settings, generate_token()))
    out = tmp_path / "dry-run"
    out.mkdir()
    # This host has no kubelet or containerd, which preflight wants: its findings are not the config's.
    result = offline("env", f"KUBEADM_INIT_DRYRUN_DIR={out}", kubeadm_bin, "init", "--dry-run", "--config", str(init),
                     "--ignore-preflight-errors=all")
    endpoint = f"https://{settings.vip}:{kubeadm.LOAD_BALANCER_PORT}"
    sans = subprocess.run(["openssl", "x509", "-in", str(out / "apiserver.crt"), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    # The clients reach this API server through the VIP, the other control planes by its own address.
    assert f"IP Address:{settings.vip}" in sans and f"IP Address:{settings.control_plane.ip}" in sans, sans
    for kubeconfig in ("admin.conf", "super-admin.conf"):
        (cluster,) = yaml.safe_load((out / kubeconfig).read_text())["clusters"]
        assert cluster["cluster"]["server"] == endpoint, kubeconfig
    # Where the joining nodes read the endpoint: the kubeadm-config ConfigMap that init uploads.
    assert f"controlPlaneEndpoint: {settings.vip}:{kubeadm.LOAD_BALANCER_PORT}" in result.stdout
    assert f"kubeadm join {settings.vip}:{kubeadm.LOAD_BALANCER_PORT} " in result.stdout
    # kubeadm's one note on the endpoint: that its port (8443, haproxy's) is not the API server's own.
    endpoint_warnings = {line.split("] ", 1)[1] for line in result.stderr.splitlines() if "[endpoint]" in line}
    assert endpoint_warnings == {"[endpoint] WARNING: port specified in controlPlaneEndpoint overrides bindPort "
                                 "in the controlplane address"}, endpoint_warnings
