#!/usr/bin/env bash
# Stage local-path (cluster, on the control plane): apply the pinned
# local-path-provisioner release manifest, fetched at run time, through a
# kustomization (the default StorageClass, the volume directory, the helper
# pod's image); then wait for the provisioner.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

main() {
  apply_kustomization "$ADDON_DIR" "$KUSTOMIZATION" local-path-storage.yaml "$MANIFEST_URL"
  kubectl -n local-path-storage rollout status deployment/local-path-provisioner --timeout="${TIMEOUT_SECONDS}s"
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
