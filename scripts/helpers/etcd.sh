# Helpers of the stages that change the etcd cluster's members, placed after lib.sh.
# shellcheck shell=bash

# etcdctl in the leader's etcd pod, through the API server ($KUBECONFIG), with the client
# certificate kubeadm gives etcd for its probes.
etcdctl() {
  kubectl -n kube-system exec "etcd-$LEADER" -- etcdctl --endpoints=https://127.0.0.1:2379 \
    --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key=/etc/kubernetes/pki/etcd/healthcheck-client.key "$@"
}

# Remove the etcd member that peers at URL $1, if there is one, asking again while etcd takes
# up to ETCD_ANSWER_SECONDS to answer (one busy with a new learner's snapshot: a real run).
remove_etcd_member() { wait_until "$ETCD_ANSWER_SECONDS" remove_etcd_member_once "$1"; }

# By its peer URL, not its name: a member that was added but never started has no name yet.
# Explicit returns: callers may test this function, which turns `set -e` off inside it.
remove_etcd_member_once() {
  local members id
  members=$(etcdctl member list) || return 1
  # member list: ID, status, name, peer URLs (comma-separated), client URLs, is learner
  id=$(awk -F', ' -v url="$1" 'index("," $4 ",", "," url ",") { print $1 }' <<<"$members") || return 1
  if [[ -z "$id" ]]; then
    log "no etcd member peers at $1"
    return 0
  fi
  etcdctl member remove "$id" >/dev/null || return 1
  log "etcd member $id ($1) removed"
}
