#!/usr/bin/env bash
# Stage remove-node (control plane, when a worker leaves the config): drain the
# worker with a time bound (not when it is NotReady: nothing there could act on
# the drain), then delete its Node object.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

main() {
  if ! kubectl get node "$TARGET_NODE" >/dev/null 2>&1; then
    log "node $TARGET_NODE is not in the cluster; nothing to remove"
    return 0
  fi
  local ready
  ready=$(ready_condition "$TARGET_NODE")
  if [[ "$ready" != True ]]; then
    # Its kubelet cannot evict anything: deleting the Node reschedules its pods.
    log "node $TARGET_NODE is not Ready (Ready=${ready:-unknown}); deleted without a drain"
  elif ! kubectl drain "$TARGET_NODE" --ignore-daemonsets --delete-emptydir-data --force \
    --timeout="${DRAIN_TIMEOUT_SECONDS}s"; then
    log "drain of $TARGET_NODE did not finish in ${DRAIN_TIMEOUT_SECONDS}s; deleting the node anyway"
  fi
  kubectl delete node "$TARGET_NODE" --ignore-not-found
  log "node $TARGET_NODE drained and deleted"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
