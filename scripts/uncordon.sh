#!/usr/bin/env bash
# Stage uncordon (on the control plane, on a version change): make the node that
# drain cordoned schedulable again, then wait, with a time bound, until it is Ready
# and its kubelet reports the configured version. The next node waits for this.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf
readonly DRAINED="$KUBEADM_ATTEMPTS/drained"

# True once the node is Ready with the configured kubelet; what it saw stays in READY and KUBELET.
upgraded_and_ready() {
  READY=$(ready_condition "$TARGET_NODE" 2>/dev/null || true)
  KUBELET=$(reported_kubelet_version "$TARGET_NODE")
  [[ "$READY" == True ]] && matches_version "$KUBE_VERSION" "$KUBELET"
}

main() {
  if [[ -f "$DRAINED/$TARGET_NODE" ]]; then
    kubectl uncordon "$TARGET_NODE" >/dev/null
    rm -f "$DRAINED/$TARGET_NODE"
    log "$TARGET_NODE uncordoned"
  fi
  wait_until "$TIMEOUT_SECONDS" upgraded_and_ready ||
    fail "$TARGET_NODE is not Ready at $KUBE_VERSION after ${TIMEOUT_SECONDS}s (Ready=${READY:-unknown}, kubelet ${KUBELET:-unknown})"
  log "$TARGET_NODE Ready, kubelet $KUBELET"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
