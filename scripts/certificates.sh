#!/usr/bin/env bash
# Stage certificates (each control plane, run over SSH by providers/certificate_expiry.py on every
# `up`): print kubeadm's report of when this node's certificates expire, as JSON. With RENEW, first
# renew every certificate kubeadm manages here and restart the static pods, which read them only
# when they start, and wait until the API server serves its new certificate.
set -euo pipefail
# @parameters

readonly SERVING_CERT=/etc/kubernetes/pki/apiserver.crt

# The expiry of the certificate the API server on this node serves, and of the one in its file.
served_expiry() {
  openssl s_client -connect "127.0.0.1:$API_SERVER_PORT" </dev/null 2>/dev/null | openssl x509 -noout -enddate 2>/dev/null
}
serves_the_renewed_certificate() { [[ "$(served_expiry)" == "$(openssl x509 -in "$SERVING_CERT" -noout -enddate)" ]]; }

# Stop each component's running container; the kubelet starts it again, with the renewed files.
restart_static_pods() {
  local component ids id
  for component in "${STATIC_PODS[@]}"; do
    ids=$(ctr --namespace k8s.io containers list --quiet "labels.\"io.kubernetes.container.name\"==$component")
    [[ -n "$ids" ]] || fail "no container of $component to restart"
    for id in $ids; do
      # Only the running one has a task; the exited ones of earlier restarts have none.
      ctr --namespace k8s.io tasks kill --signal SIGTERM "$id" 2>/dev/null || true
    done
  done
  log "restarted: ${STATIC_PODS[*]}" >&2
}

main() {
  if ((RENEW)); then
    run_logged /var/log/kvm-kubeadm/certificates.log kubeadm certs renew all
    restart_static_pods
    wait_until "$TIMEOUT_SECONDS" serves_the_renewed_certificate ||
      fail "the API server does not serve its renewed certificate ${TIMEOUT_SECONDS}s after the restart"
    log "certificates renewed" >&2
  fi
  kubeadm certs check-expiration -o json
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
