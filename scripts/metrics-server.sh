#!/usr/bin/env bash
# Stage metrics-server (cluster, on the control plane): apply the pinned
# metrics-server release manifest, fetched at run time, through a kustomization
# (kubelet TLS, the mirrored image); then wait until the metrics API serves.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

main() {
  apply_kustomization "$ADDON_DIR" "$KUSTOMIZATION" components.yaml "$MANIFEST_URL"
  kubectl -n kube-system rollout status deployment/metrics-server --timeout="${TIMEOUT_SECONDS}s"
  # kubectl top answers once the API server sees the aggregated metrics API available.
  kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout="${TIMEOUT_SECONDS}s"
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
