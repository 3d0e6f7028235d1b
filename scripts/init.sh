#!/usr/bin/env bash
# Stage init (control plane): kubeadm init from the config file read on stdin
# (it holds the bootstrap token), skipped once initialised; then the admin
# kubeconfig for the SSH user, as the procedure does.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-init.yaml
readonly LOG=/var/log/kvm-kubeadm/init.log

init_control_plane() {
  if [[ -f /etc/kubernetes/admin.conf ]]; then
    log "already initialised; kubeadm init skipped"
    return 0
  fi
  run_logged "$LOG" kubeadm init --config "$CONFIG"
  log "kubeadm init done"
}

copy_admin_kubeconfig() {
  local home group
  home=$(getent passwd "$SSH_USER" | cut -d: -f6)
  group=$(id -gn "$SSH_USER")
  install -d -m 0700 -o "$SSH_USER" -g "$group" "$home/.kube"
  install -m 0600 -o "$SSH_USER" -g "$group" /etc/kubernetes/admin.conf "$home/.kube/config"
}

main() {
  write_secret_file "$CONFIG"
  init_control_plane
  copy_admin_kubeconfig
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
