#!/usr/bin/env bash
# Stage join (worker): kubeadm join from the JoinConfiguration read on stdin
# (it holds the token and CA hash), once: skipped after it succeeded, retried
# from a reset node after it failed.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-join.yaml
readonly ATTEMPTS=3

# Asked anonymously (kubeadm's clusters let anyone read /readyz) and without checking the
# certificate: nothing secret is sent, and only the answer "ok" counts.
api_ready() { [[ "$(curl -ksS --max-time 10 "$API_URL/readyz" 2>/dev/null)" == ok ]]; }

# kubeadm join's preflight reads the cluster's config with a retry of only 350 ms, so a
# control plane that restarts its API server at that moment (seen on loaded, emulated
# hosts) fails the join at once. Each attempt waits for the API server first; a failed
# one is retried from a reset node while the join timeout lasts, which a wrong token
# (discovery waits out that timeout) never gets.
main() {
  write_secret_file "$CONFIG"
  local attempt
  for ((attempt = 1; ; attempt++)); do
    wait_until "$TIMEOUT_SECONDS" api_ready ||
      fail "the API server at $API_URL is not ready after ${TIMEOUT_SECONDS}s"
    run_kubeadm_once join --config "$CONFIG" && return 0
    ((attempt < ATTEMPTS && SECONDS < TIMEOUT_SECONDS)) || return 1
    log "kubeadm join attempt $attempt of $ATTEMPTS failed; trying again once the API server is ready"
  done
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
