#!/usr/bin/env bash
# Stage join (worker): kubeadm join from the JoinConfiguration read on stdin
# (it holds the token and CA hash), skipped once the node has joined.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-join.yaml
readonly LOG=/var/log/kvm-kubeadm/join.log

main() {
  install -d -m 0755 /etc/kubernetes
  (umask 077 && cat >"$CONFIG")
  if [[ -f /etc/kubernetes/kubelet.conf ]]; then
    log "already joined; kubeadm join skipped"
    return 0
  fi
  install -d -m 0700 "$(dirname "$LOG")"
  if ! kubeadm join --config "$CONFIG" >"$LOG" 2>&1; then
    echo "kubeadm join failed on $NODE_NAME; last lines of $LOG:" >&2
    tail -n 40 "$LOG" | redact >&2
    return 1
  fi
  log "joined the cluster"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
