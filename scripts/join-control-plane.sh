#!/usr/bin/env bash
# Stage join (a joining control plane): kubeadm join --control-plane from the JoinConfiguration
# read on stdin (it holds the token, the CA hash and the certificate key), once: skipped after it
# succeeded, retried from a reset node after it failed, as a worker's join is (join.sh). A failed
# attempt may have added this node's etcd member already, and `kubeadm reset` deletes the member's
# data even when it cannot remove the member: a two-member etcd then loses its quorum (seen on a
# real run). So before that reset the member leaves the cluster, with the Node; when it cannot,
# the node is not reset. An attempt that failed in kubeadm's etcd-join phase is not reset at all:
# that phase and the ones after it run again.
set -euo pipefail
# @parameters
# @helpers etcd

readonly CONFIG=/etc/kubernetes/kubeadm-join.yaml
readonly ATTEMPTS=3
# What run_kubeadm_once (lib.sh) keeps of an attempt: its marker while it runs, and its log.
readonly UNFINISHED="$KUBEADM_ATTEMPTS/$STAGE.attempt"
readonly JOIN_LOG="/var/log/kvm-kubeadm/$STAGE.log"
# Written by the join before it adds the etcd member: without it, there is no member to remove.
export KUBECONFIG=/etc/kubernetes/admin.conf

# Asked anonymously and without checking the certificate: nothing secret is sent, and only "ok" counts.
api_ready() { [[ "$(curl -ksS --max-time 10 "$API_URL/readyz" 2>/dev/null)" == ok ]]; }

# The phases an attempt that failed in etcd-join has done: its kubelet runs, its etcd learner is added.
readonly DONE_BEFORE_ETCD_JOIN=preflight,control-plane-prepare,check-etcd,kubelet-start

# kubeadm's etcd-join gives up on the first etcd call that takes over 2 s (its member list right
# after the learner's etcd starts, under load: a real run), while the learner it added goes on
# joining. Nothing of that attempt needs undoing.
failed_in_etcd_join() { [[ -f "$UNFINISHED" ]] && grep -q 'error execution phase etcd-join' "$JOIN_LOG" 2>/dev/null; }

# kubeadm join again from its etcd-join phase (it finds the learner added, and promotes it).
# Explicit returns, as main tests it.
join_from_etcd_join() {
  log "the unfinished join failed in etcd-join; kubeadm join goes on from there"
  run_logged "$JOIN_LOG" kubeadm join --config "$CONFIG" --skip-phases="$DONE_BEFORE_ETCD_JOIN" || return 1
  rm -f "$UNFINISHED"
  log "kubeadm join done"
}

# Undo what an unfinished attempt left in the cluster, keeping its log for a look. Explicit
# returns, as main tests it.
leave_the_cluster() {
  [[ -f "$UNFINISHED" ]] || return 0
  if [[ -f "$JOIN_LOG" ]]; then mv "$JOIN_LOG" "$JOIN_LOG.failed"; fi
  [[ -f "$KUBECONFIG" ]] || return 0
  if ! remove_etcd_member "$ETCD_PEER_URL"; then
    fail "this node's etcd member did not leave the cluster; not resetting it, as the others may need its data for their quorum"
    return 1
  fi
  kubectl delete node "$NODE_NAME" --ignore-not-found >/dev/null || return 1
  log "the unfinished join's etcd member and Node left the cluster"
}

# Each attempt waits for the API server behind the VIP first; a failed one is retried while the
# join timeout lasts.
main() {
  write_secret_file "$CONFIG"
  local attempt
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    wait_until "$TIMEOUT_SECONDS" api_ready ||
      fail "the API server at $API_URL is not ready after ${TIMEOUT_SECONDS}s"
    if failed_in_etcd_join; then
      if join_from_etcd_join; then return 0; fi
    else
      leave_the_cluster || return 1
      if run_kubeadm_once join --config "$CONFIG"; then return 0; fi
    fi
    ((SECONDS < TIMEOUT_SECONDS)) || break
    log "kubeadm join attempt $attempt of $ATTEMPTS failed; it is tried again"
  done
  return 1
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
