#!/usr/bin/env bash
# Undo of an addon stage (cluster, on the control plane), when its switch is
# turned off: delete what its kustomization applied. A storage addon whose
# StorageClass still backs volumes stays: deleting it would strand them.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

volumes_of_class() {
  kubectl get persistentvolumes -o "jsonpath={range .items[?(@.spec.storageClassName==\"$1\")]}{.metadata.name}{\"\\n\"}{end}"
}

main() {
  if [[ ! -f "$ADDON_DIR/kustomization.yaml" ]]; then
    log "nothing applied from $ADDON_DIR; nothing to remove"
    return 0
  fi
  if [[ -n "$STORAGE_CLASS" ]]; then
    local volumes
    volumes=$(volumes_of_class "$STORAGE_CLASS")
    [[ -z "$volumes" ]] ||
      fail "StorageClass $STORAGE_CLASS still backs these volumes: $(echo "$volumes" | paste -sd ' '); delete their PersistentVolumeClaims, then run 'pulumi up' again"
  fi
  kubectl delete -k "$ADDON_DIR" --ignore-not-found --timeout="${TIMEOUT_SECONDS}s"
  rm -rf "$ADDON_DIR"
  log "removed"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
