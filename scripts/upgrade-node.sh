#!/usr/bin/env bash
# Stage upgrade-node (worker, on a version change): `kubeadm upgrade node`, which
# brings this node's kubelet configuration to the cluster's new version. Skipped
# when the kubelet reports the configured version (the node is upgraded).
set -euo pipefail
# @parameters

# For kubectl. kubeadm does not read KUBECONFIG: without --kubeconfig, `kubeadm upgrade
# node` takes /etc/kubernetes/kubelet.conf on a worker (admin.conf where a kube-apiserver
# manifest is), and the node credentials may read what it needs (kube-proxy's ConfigMap,
# which they may not, it goes without).
export KUBECONFIG=/etc/kubernetes/kubelet.conf
readonly CONFIG=/etc/kubernetes/kubeadm-upgrade.yaml

main() {
  local kubelet
  kubelet=$(reported_kubelet_version "$NODE_NAME")
  if matches_version "$KUBE_VERSION" "$kubelet"; then
    log "kubelet $kubelet is at $KUBE_VERSION already; skipped"
    return 0
  fi
  printf '%s' "$UPGRADE_CONFIG" >"$CONFIG"
  run_logged "/var/log/kvm-kubeadm/$STAGE.log" kubeadm upgrade node --config "$CONFIG"
  log "kubeadm upgrade node done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
