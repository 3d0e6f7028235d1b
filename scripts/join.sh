#!/usr/bin/env bash
# Stage join (worker): kubeadm join from the JoinConfiguration read on stdin
# (it holds the token and CA hash), skipped once the node has joined.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-join.yaml
readonly LOG=/var/log/kvm-kubeadm/join.log

main() {
  write_secret_file "$CONFIG"
  if [[ -f /etc/kubernetes/kubelet.conf ]]; then
    log "already joined; kubeadm join skipped"
    return 0
  fi
  run_logged "$LOG" kubeadm join --config "$CONFIG"
  log "joined the cluster"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
