#!/usr/bin/env bash
# Stage upgrade-kubelet (every node, on a version change): kubelet and kubectl at
# the version of this node's kubeadm, held, then the kubelet restarted. Skipped
# when the kubelet reports the configured version.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/kubelet.conf

main() {
  local kubelet kubeadm
  kubelet=$(reported_kubelet_version "$NODE_NAME")
  if matches_version "$KUBE_VERSION" "$kubelet"; then
    log "kubelet $kubelet is at $KUBE_VERSION already; skipped"
    return 0
  fi
  kubeadm=$(installed_version kubeadm)
  matches_version "$KUBE_VERSION" "$kubeadm" || fail "kubeadm is ${kubeadm:-missing}, not $KUBE_VERSION: upgrade-kubeadm must run first"
  if [[ "$(installed_version kubelet) $(installed_version kubectl)" != "$kubeadm $kubeadm" ]]; then
    install_held "$kubeadm" kubelet kubectl
  fi
  systemctl daemon-reload
  systemctl restart kubelet
  log "kubelet restarted at $kubeadm"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
