#!/usr/bin/env bash
# Stage ready: wait, with a time bound, until the named nodes are Ready (and,
# on the control plane, the API server's /readyz says ok). On timeout, name the
# nodes that are not Ready and show this node's kubelet journal.
set -euo pipefail
# @parameters

export KUBECONFIG="$KUBECONFIG_PATH"

not_ready_nodes() {
  local node status
  for node in "${WAIT_FOR_NODES[@]}"; do
    status=$(ready_condition "$node" 2>/dev/null || true)
    [[ "$status" == True ]] || echo "$node"
  done
}

readyz() {
  kubectl get --raw=/readyz 2>/dev/null || echo "not ok"
}

# True once every node is Ready (and /readyz says ok); what it saw stays in PENDING and API.
all_ready() {
  PENDING=$(not_ready_nodes | paste -sd' ' -)
  API=ok
  if ((CHECK_READYZ)); then API=$(readyz); fi
  [[ -z "$PENDING" && "$API" == ok ]]
}

main() {
  if wait_until "$TIMEOUT_SECONDS" all_ready; then
    log "Ready: ${WAIT_FOR_NODES[*]}"
    return 0
  fi
  echo "after ${TIMEOUT_SECONDS}s: not Ready: ${PENDING:-none}; /readyz: $API" >&2
  if [[ " $PENDING " == *" $NODE_NAME "* ]]; then
    echo "--- last kubelet journal lines on $NODE_NAME ---" >&2
    journalctl -u kubelet -n 40 --no-pager 2>&1 | redact >&2 || true
  fi
  return 1
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
