#!/usr/bin/env bash
# Stage upload-certs (on the leader, just before a control plane joins): the
# control-plane certificates into the kubeadm-certs Secret, encrypted with the
# certificate key read on stdin. The Secret lasts two hours, so each join gets
# it afresh, however long ago init or the last join was.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf
readonly CONFIG=/etc/kubernetes/kubeadm-upload-certs.yaml
readonly LOG=/var/log/kvm-kubeadm/upload-certs.log

main() {
  local key version
  read -r key
  version=$(kubeadm version -o short)
  # The version too: without it, kubeadm would look for the latest release online first.
  printf '%s\n' "apiVersion: $KUBEADM_API" "kind: InitConfiguration" "certificateKey: $key" --- \
    "apiVersion: $KUBEADM_API" "kind: ClusterConfiguration" "kubernetesVersion: $version" | write_secret_file "$CONFIG"
  install -d -m 0700 "$(dirname "$LOG")"
  # kubeadm prints the key: its output stays in a root-only log, shown without it.
  if ! (umask 077 && kubeadm init phase upload-certs --upload-certs --config "$CONFIG" >"$LOG" 2>&1); then
    echo "kubeadm init phase upload-certs failed on $NODE_NAME; last lines of $LOG:" >&2
    tail -n 40 "$LOG" | grep -vF "$key" | redact >&2
    return 1
  fi
  log "control-plane certificates uploaded to the kubeadm-certs Secret for two hours"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
