#!/usr/bin/env bash
# Stage os-prep (every node): swap off, firewall, SELinux, hostname and hosts
# entry, kernel modules and sysctls for Kubernetes networking. With NODE_IDENTITY
# off (a prepared image's build) only what does not depend on the node.
set -euo pipefail
# @parameters

disable_swap() {
  if [[ -n "$(swapon --noheadings --show=NAME 2>/dev/null)" ]]; then
    swapoff -a
    log "swap turned off"
  fi
  # Comment out swap entries so it stays off after a reboot.
  if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab; then
    sed -Ei 's/^([^#].*[[:space:]]swap[[:space:]].*)$/# \1/' /etc/fstab
    log "swap entries commented out in /etc/fstab"
  fi
}

configure_firewall() {
  if [[ "$FIREWALL" == disable ]]; then
    if command -v ufw >/dev/null && ufw status | grep '^Status: active' >/dev/null; then
      ufw disable
      log "ufw disabled"
    fi
    if command -v systemctl >/dev/null && systemctl is-active --quiet firewalld 2>/dev/null; then
      systemctl disable --now firewalld
      log "firewalld disabled"
    fi
    return
  fi
  if ! command -v ufw >/dev/null; then
    log "firewall=open-ports but ufw is not installed; nothing to open"
    return
  fi
  local port
  for port in "${FIREWALL_PORTS[@]}"; do
    ufw allow "$port" >/dev/null
  done
  ufw allow OpenSSH >/dev/null
  ufw --force enable >/dev/null
  log "ufw allows ${FIREWALL_PORTS[*]}"
}

set_selinux_permissive() {
  if command -v getenforce >/dev/null && [[ "$(getenforce)" == Enforcing ]]; then
    setenforce 0
    log "SELinux set to permissive"
  fi
  if [[ -f /etc/selinux/config ]] && grep -q '^SELINUX=enforcing' /etc/selinux/config; then
    sed -i 's/^SELINUX=enforcing/SELINUX=permissive/' /etc/selinux/config
  fi
}

set_hostname() {
  if [[ "$(hostname)" != "$NODE_NAME" ]]; then
    hostnamectl set-hostname "$NODE_NAME" 2>/dev/null || {
      echo "$NODE_NAME" >/etc/hostname
      hostname "$NODE_NAME"
    }
    log "hostname set"
  fi
  # The node's own name resolves to its fixed address, not to a loopback alias.
  local entry="$NODE_IP $NODE_NAME $NODE_NAME.$DNS_DOMAIN"
  if ! grep -qxF "$entry" /etc/hosts; then
    sed -i -E "/[[:space:]]$NODE_NAME([[:space:]]|\$)/d" /etc/hosts
    echo "$entry" >>/etc/hosts
    log "hosts entry written"
  fi
}

load_kernel_modules() {
  local module
  printf '%s\n' overlay br_netfilter >/etc/modules-load.d/kubernetes.conf
  for module in overlay br_netfilter; do
    modprobe "$module"
  done
}

set_sysctls() {
  cat >/etc/sysctl.d/90-kubernetes.conf <<'CONF'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
CONF
  sysctl --quiet --load=/etc/sysctl.d/90-kubernetes.conf
}

wait_for_cloud_init() {
  # First boot installs packages; apt must be free before the later stages use it.
  if command -v cloud-init >/dev/null; then
    cloud-init status --wait >/dev/null 2>&1 || log "cloud-init finished with errors; continuing"
  fi
}

main() {
  wait_for_cloud_init
  disable_swap
  set_selinux_permissive
  load_kernel_modules
  set_sysctls
  if ((NODE_IDENTITY)); then
    configure_firewall
    set_hostname
  fi
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
