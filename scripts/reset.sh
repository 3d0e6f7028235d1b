#!/usr/bin/env bash
# Stage reset (worker, when it leaves the config): undo kubeadm join.
set -euo pipefail
# @parameters

main() {
  if ! command -v kubeadm >/dev/null; then
    log "kubeadm not installed; nothing to reset"
    return 0
  fi
  # A failed reset must not block removing a VM that is going away anyway.
  reset_kubeadm
  rm -f /etc/kubernetes/kubeadm-join.yaml
  log "kubeadm reset done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
