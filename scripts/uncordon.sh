#!/usr/bin/env bash
# Stage uncordon (on the control plane, on a version change): make the node that
# drain cordoned schedulable again, then wait, with a time bound, until it is Ready
# and its kubelet reports the configured version. The next node waits for this.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf
readonly DRAINED="$KUBEADM_ATTEMPTS/drained"

main() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) ready kubelet
  if [[ -f "$DRAINED/$TARGET_NODE" ]]; then
    kubectl uncordon "$TARGET_NODE" >/dev/null
    rm -f "$DRAINED/$TARGET_NODE"
    log "$TARGET_NODE uncordoned"
  fi
  while :; do
    ready=$(kubectl get node "$TARGET_NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    kubelet=$(reported_kubelet_version "$TARGET_NODE")
    if [[ "$ready" == True ]] && matches_version "$KUBE_VERSION" "$kubelet"; then
      log "$TARGET_NODE Ready, kubelet $kubelet"
      return 0
    fi
    ((SECONDS < deadline)) ||
      fail "$TARGET_NODE is not Ready at $KUBE_VERSION after ${TIMEOUT_SECONDS}s (Ready=${ready:-unknown}, kubelet ${kubelet:-unknown})"
    sleep 5
  done
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
