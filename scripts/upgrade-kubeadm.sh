#!/usr/bin/env bash
# Stage upgrade-kubeadm (every node, on a version change): the kube package
# repository of the configured minor version, then the kubeadm package at the
# configured version, held. Skipped when kubeadm is at that version already.
set -euo pipefail
# @parameters

main() {
  local installed wanted
  use_kube_repo "$KUBE_REPO"
  installed=$(installed_version kubeadm)
  if matches_version "$KUBE_VERSION" "$installed"; then
    log "kubeadm $installed is at $KUBE_VERSION already; skipped"
    return 0
  fi
  wanted=$(newest_matching kubeadm "$KUBE_VERSION")
  [[ -n "$wanted" ]] || fail "no kubeadm package matches version $KUBE_VERSION in $KUBE_REPO"
  install_held "$wanted" kubeadm
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
