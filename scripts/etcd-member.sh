#!/usr/bin/env bash
# Stage etcd-member (a joining control plane, after its join): wait, with a time
# bound, until this node's etcd member is healthy and its API server ready, so
# that the next control plane joins a settled etcd.
set -euo pipefail
# @parameters

member_healthy() { [[ "$(curl -sS --max-time 10 "$ETCD_HEALTH_URL" 2>/dev/null)" == *'"health":"true"'* ]]; }
api_ready() { [[ "$(curl -ksS --max-time 10 "$API_READYZ_URL" 2>/dev/null)" == ok ]]; }
settled() { member_healthy && api_ready; }

main() {
  wait_until "$TIMEOUT_SECONDS" settled ||
    fail "after ${TIMEOUT_SECONDS}s: etcd member healthy: $(member_healthy && echo yes || echo no), API server ready: $(api_ready && echo yes || echo no)"
  log "etcd member healthy, API server ready"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
