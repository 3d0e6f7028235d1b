"""The control plane's load balancer, as kubeadm's `ha-considerations` guide describes it: keepalived
moves the VIP to a healthy control plane, and haproxy there spreads the API over every control plane
whose API server answers /readyz. Both run on the control planes themselves, from the OS's packages
(scripts/load-balancer.sh installs them and writes these files)."""

from __future__ import annotations

from ipaddress import IPv4Address

from .config import NodeSpec, Settings
from .kubeadm import API_SERVER_PORT, LOAD_BALANCER_PORT

HAPROXY_CONFIG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONFIG = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/check-apiserver.sh"
INTERFACE = "@INTERFACE@"
"""Stands for the node's interface on the node subnet, which only the node knows; the script puts it in."""
# One VRRP group per node network: every stack has a network of its own.
VIRTUAL_ROUTER_ID = 51
# The leader starts highest; a failing check drops a node below every healthy one.
TOP_PRIORITY = 150
FAILED_CHECK_WEIGHT = -50


def haproxy_config(settings: Settings) -> str:
    """TCP to every control plane's API server that passes a TLS GET of /readyz; when none does, to all
    of them unchecked."""
    servers = "".join(
        f"    server {node.name} {node.ip}:{API_SERVER_PORT} check check-ssl verify none\n"
        for node in settings.control_planes
    )
    # /readyz fails while etcd answers slowly, and an API server that is not ready still serves most
    # requests (seen on a loaded, emulated host): no ready one should not mean no API at all.
    fallbacks = "".join(
        f"    server {node.name}-unchecked {node.ip}:{API_SERVER_PORT} backup\n" for node in settings.control_planes
    )
    return (
        "# Written by kvm-kubeadm (scripts/load-balancer.sh): the API behind the VIP.\n"
        "global\n"
        "    log /dev/log local0\n"
        "    daemon\n"
        "defaults\n"
        "    mode tcp\n"
        "    log global\n"
        "    option tcplog\n"
        # A connection refused by a control plane that is gone but not yet out is retried elsewhere.
        "    retries 1\n"
        "    option redispatch\n"
        "    timeout connect 10s\n"
        # kubectl's watches hold a connection open for long.
        "    timeout client 20m\n"
        "    timeout server 20m\n"
        "frontend apiserver\n"
        f"    bind *:{LOAD_BALANCER_PORT}\n"
        "    default_backend apiserver\n"
        "backend apiserver\n"
        "    option httpchk\n"
        "    http-check send meth GET uri /readyz\n"
        "    http-check expect status 200\n"
        # The API server's own etcd check may take its 10 s on a slow host.
        "    timeout check 15s\n"
        "    default-server inter 5s fall 3 rise 2\n"
        "    balance roundrobin\n"
        "    option allbackups\n"
        f"{servers}"
        f"{fallbacks}"
    )


def check_script() -> str:
    """keepalived's health check: this node's haproxy serves a ready API."""
    return (
        "#!/bin/sh\n"
        "# Written by kvm-kubeadm: keepalived's check that this node's haproxy serves a ready API server.\n"
        f"exec curl -sfk --max-time 3 -o /dev/null https://127.0.0.1:{LOAD_BALANCER_PORT}/readyz\n"
    )


def priority(settings: Settings, node: NodeSpec) -> int:
    return TOP_PRIORITY - settings.control_planes.index(node)


def keepalived_config(settings: Settings, node: NodeSpec) -> str:
    """One VRRP instance, over unicast to the other control planes (alone: none); the VIP goes to the
    highest priority whose check passes."""
    vip: IPv4Address = settings.vip
    peers = "".join(f"        {other.ip}\n" for other in settings.control_planes if other != node)
    unicast = f"    unicast_src_ip {node.ip}\n    unicast_peer {{\n{peers}    }}\n" if peers else ""
    return (
        "# Written by kvm-kubeadm (scripts/load-balancer.sh): the VIP of the control plane.\n"
        "global_defs {\n"
        f"    router_id {node.name}\n"
        "    script_user root\n"
        "    enable_script_security\n"
        "}\n"
        "vrrp_script check_apiserver {\n"
        f"    script \"{CHECK_SCRIPT}\"\n"
        "    interval 3\n"
        "    timeout 5\n"
        "    fall 3\n"
        "    rise 2\n"
        f"    weight {FAILED_CHECK_WEIGHT}\n"
        "}\n"
        "vrrp_instance apiserver {\n"
        "    state BACKUP\n"
        f"    interface {INTERFACE}\n"
        f"    virtual_router_id {VIRTUAL_ROUTER_ID}\n"
        f"    priority {priority(settings, node)}\n"
        "    advert_int 1\n"
        f"{unicast}"
        "    virtual_ipaddress {\n"
        f"        {vip}/{settings.network.subnet.prefixlen}\n"
        "    }\n"
        "    track_script {\n"
        "        check_apiserver\n"
        "    }\n"
        "}\n"
    )
