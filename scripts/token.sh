#!/usr/bin/env bash
# Stage token (control plane): register the bootstrap token read on stdin
# (line 1: token, line 2: expiry in epoch seconds) unless kubeadm has it.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

main() {
  local token expires ttl
  read -r token
  read -r expires
  if kubeadm token list 2>/dev/null | awk 'NR > 1 { print $1 }' | grep -xF "$token" >/dev/null; then
    log "bootstrap token already registered"
    return 0
  fi
  ttl=$((expires - $(date +%s)))
  if ((ttl < 300)); then
    echo "the bootstrap token expires in ${ttl}s; run 'pulumi up' again to renew it" >&2
    return 1
  fi
  if ! kubeadm token create "$token" --ttl "${ttl}s" --description "kvm-kubeadm bootstrap token" 2>&1 >/dev/null | redact >&2; then
    return 1
  fi
  log "bootstrap token registered for ${ttl}s"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
