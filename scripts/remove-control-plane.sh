#!/usr/bin/env bash
# Stage remove-control-plane (on the leader, when a control plane leaves the
# config): drain it with a time bound (not when it is NotReady), remove its etcd
# member, so that the rest keep their quorum without it, then delete its Node.
set -euo pipefail
# @parameters
# @helpers etcd

export KUBECONFIG=/etc/kubernetes/admin.conf

main() {
  if kubectl get node "$TARGET_NODE" >/dev/null 2>&1 && [[ "$(ready_condition "$TARGET_NODE")" == True ]]; then
    kubectl drain "$TARGET_NODE" --ignore-daemonsets --delete-emptydir-data --force --timeout="${DRAIN_TIMEOUT_SECONDS}s" ||
      log "drain of $TARGET_NODE did not finish in ${DRAIN_TIMEOUT_SECONDS}s; removing it anyway"
  fi
  remove_etcd_member "$ETCD_PEER_URL"
  kubectl delete node "$TARGET_NODE" --ignore-not-found
  log "control plane $TARGET_NODE removed"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
