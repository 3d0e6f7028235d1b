#!/usr/bin/env bash
# Stage remove-control-plane (on the leader, when a control plane leaves the
# config): drain it with a time bound (not when it is NotReady), remove its etcd
# member, so that the rest keep their quorum without it, then delete its Node.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

# etcdctl in the leader's etcd pod, with the client certificate kubeadm gives it for its probes.
etcdctl() {
  kubectl -n kube-system exec "etcd-$LEADER" -- etcdctl --endpoints="$ETCD_URL" \
    --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key=/etc/kubernetes/pki/etcd/healthcheck-client.key "$@"
}

remove_member() {
  local id
  # member list: ID, status, name, peer URLs, client URLs, is learner
  id=$(etcdctl member list | awk -F', ' -v name="$TARGET_NODE" '$3 == name { print $1 }')
  if [[ -z "$id" ]]; then
    log "$TARGET_NODE has no etcd member"
    return 0
  fi
  etcdctl member remove "$id" >/dev/null
  log "etcd member $TARGET_NODE ($id) removed"
}

main() {
  if kubectl get node "$TARGET_NODE" >/dev/null 2>&1 && [[ "$(ready_condition "$TARGET_NODE")" == True ]]; then
    kubectl drain "$TARGET_NODE" --ignore-daemonsets --delete-emptydir-data --force --timeout="${DRAIN_TIMEOUT_SECONDS}s" ||
      log "drain of $TARGET_NODE did not finish in ${DRAIN_TIMEOUT_SECONDS}s; removing it anyway"
  fi
  remove_member
  kubectl delete node "$TARGET_NODE" --ignore-not-found
  log "control plane $TARGET_NODE removed"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
