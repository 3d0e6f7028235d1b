#!/usr/bin/env bash
# Stage join (worker): kubeadm join from the JoinConfiguration read on stdin
# (it holds the token and CA hash), once: skipped after it succeeded, retried
# from a reset node after it failed.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-join.yaml

main() {
  write_secret_file "$CONFIG"
  run_kubeadm_once join --config "$CONFIG"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
