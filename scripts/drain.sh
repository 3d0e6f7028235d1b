#!/usr/bin/env bash
# Stage drain (on the control plane, on a version change): drain the node before
# its kubelet is upgraded, with a time bound. Skipped when its kubelet reports the
# configured version. The mark left here lets uncordon tell our cordon from yours.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf
readonly DRAINED="$KUBEADM_ATTEMPTS/drained"

main() {
  local kubelet
  kubelet=$(reported_kubelet_version "$TARGET_NODE")
  if matches_version "$KUBE_VERSION" "$kubelet"; then
    log "$TARGET_NODE runs kubelet $kubelet already; skipped"
    return 0
  fi
  install -d -m 0755 "$DRAINED"
  touch "$DRAINED/$TARGET_NODE"
  kubectl drain "$TARGET_NODE" --ignore-daemonsets --delete-emptydir-data --timeout="${DRAIN_TIMEOUT_SECONDS}s" ||
    fail "drain of $TARGET_NODE did not finish in ${DRAIN_TIMEOUT_SECONDS}s: move what blocks it, then run 'pulumi up' again"
  log "$TARGET_NODE drained"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
