#!/usr/bin/env bash
# Stage init (control plane): kubeadm init from the config file read on stdin
# (it holds the bootstrap token) and the static pods' patches, once: skipped
# after it succeeded, retried from a reset node after it failed; then the admin
# kubeconfig for the SSH user, as the procedure does.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-init.yaml

copy_admin_kubeconfig() {
  local home group
  home=$(getent passwd "$SSH_USER" | cut -d: -f6)
  group=$(id -gn "$SSH_USER")
  install -d -m 0700 -o "$SSH_USER" -g "$group" "$home/.kube"
  install -m 0600 -o "$SSH_USER" -g "$group" /etc/kubernetes/admin.conf "$home/.kube/config"
}

main() {
  write_secret_file "$CONFIG"
  write_files_into "$PATCHES_DIR" "${PATCHES[@]}"
  run_kubeadm_once init --config "$CONFIG"
  copy_admin_kubeconfig
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
