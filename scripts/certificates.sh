#!/usr/bin/env bash
# Stage certificates (each control plane, run over SSH by providers/certificate_expiry.py on every
# `up`): print kubeadm's report of when this node's certificates expire, as JSON. With RENEW, first
# renew every certificate kubeadm manages here and restart the static pods, which read them only
# when they start, and wait until each runs again and the API server is ready.
set -euo pipefail
# @parameters

readonly CTR=(ctr --namespace k8s.io)
# The containers restart_static_pods stopped, by id.
declare -A STOPPED=()

containers_of() { "${CTR[@]}" containers list --quiet "labels.\"io.kubernetes.container.name\"==$1"; }

# Stop each component's running container; the kubelet starts it again, with the renewed files.
restart_static_pods() {
  local component ids id
  for component in "${STATIC_PODS[@]}"; do
    ids=$(containers_of "$component")
    [[ -n "$ids" ]] || fail "no container of $component to restart"
    for id in $ids; do
      STOPPED[$id]=1
      # Only the running one has a task; the exited ones of earlier restarts have none.
      "${CTR[@]}" tasks kill --signal SIGTERM "$id" 2>/dev/null || true
    done
  done
  log "restarted: ${STATIC_PODS[*]}" >&2
}

# Whether every component runs again in a container that the restart did not stop. The API
# server's serving certificate alone says nothing: it reloads that file without a restart.
each_component_runs_anew() {
  local running component id
  running=$("${CTR[@]}" tasks list | awk '$3 == "RUNNING" {print $1}')
  for component in "${STATIC_PODS[@]}"; do
    for id in $(containers_of "$component"); do
      if [[ -z "${STOPPED[$id]:-}" ]] && grep -qxF "$id" <<<"$running"; then
        continue 2
      fi
    done
    return 1
  done
}
api_ready() { [[ "$(curl -ksS --max-time 10 "$API_READYZ_URL" 2>/dev/null)" == ok ]]; }

main() {
  if ((RENEW)); then
    run_logged /var/log/kvm-kubeadm/certificates.log kubeadm certs renew all
    restart_static_pods
    local deadline=$((SECONDS + TIMEOUT_SECONDS))
    wait_until "$TIMEOUT_SECONDS" each_component_runs_anew ||
      fail "not every one of ${STATIC_PODS[*]} runs again ${TIMEOUT_SECONDS}s after the restart"
    wait_until "$((deadline - SECONDS))" api_ready ||
      fail "the API server is not ready ${TIMEOUT_SECONDS}s after the restart"
    log "certificates renewed" >&2
  fi
  kubeadm certs check-expiration -o json
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
