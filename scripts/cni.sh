#!/usr/bin/env bash
# Stage cni (control plane): apply the pinned flannel manifest, fetched at run
# time, through a kustomization that sets the pod CIDR (and the image
# registry, when mirrored); then wait for the DaemonSet.
set -euo pipefail
# @parameters

readonly DIR=/etc/kvm-kubeadm/flannel
export KUBECONFIG=/etc/kubernetes/admin.conf

# flannel reaches the API through its Service address, which works once kube-proxy
# has programmed it. Started before that, flannel crash-loops, and the kubelet's
# back-off (up to 5 minutes a restart) holds it back long after the path works.
wait_for_api_service() {
  wait_until "$TIMEOUT_SECONDS" kubectl --server="$API_SERVICE_URL" --request-timeout=10s get --raw=/readyz >/dev/null 2>&1 ||
    fail "the API server does not answer at its Service address $API_SERVICE_URL after ${TIMEOUT_SECONDS}s; is kube-proxy running on $NODE_NAME?"
}

main() {
  wait_for_api_service
  apply_kustomization "$DIR" "$KUSTOMIZATION" kube-flannel.yml "$MANIFEST_URL"
  kubectl -n kube-flannel rollout status daemonset/kube-flannel-ds --timeout="${TIMEOUT_SECONDS}s"
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
