# Shared helpers, placed into every rendered stage script after its parameters.
# shellcheck shell=bash

log() { printf '[%s %s] %s\n' "$STAGE" "$NODE_NAME" "$*"; }

# Output that may quote a bootstrap token or CA hash is passed through this before it is shown.
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g; s/sha256:[0-9a-f]{64}/sha256:<hash>/g'; }

# Write stdin (a secret: it may hold a token) to FILE, readable by root only.
write_secret_file() {
  install -d -m 0755 "$(dirname "$1")"
  (umask 077 && cat >"$1")
}

# Run a command with its output in LOG (root only); on failure show LOG's tail, redacted.
run_logged() {
  local log=$1
  shift
  install -d -m 0700 "$(dirname "$log")"
  if ! "$@" >"$log" 2>&1; then
    echo "'$1 $2' failed on $NODE_NAME; last lines of $log:" >&2
    tail -n 40 "$log" | redact >&2
    return 1
  fi
}

# kubeadm init and join write their files before they wait for the node to come
# up. A marker held only while kubeadm runs tells an attempt that did not finish
# (reset it, then retry) from a node that is done (skip).
readonly KUBEADM_ATTEMPTS=/var/lib/kvm-kubeadm
kubeadm_left_files() {
  compgen -G '/etc/kubernetes/*.conf' >/dev/null || compgen -G '/etc/kubernetes/manifests/*.yaml' >/dev/null ||
    [[ -e /etc/kubernetes/pki/ca.crt || -d /var/lib/etcd/member ]]
}

# kubeadm reset plus what it leaves in place (the CNI configs), so that init or
# join can start clean. The directory itself stays: containerd 2.x's CRI plugin
# watches it and exits when it is removed.
reset_kubeadm() {
  kubeadm reset -f >/dev/null 2>&1 || log "kubeadm reset reported an error; continuing"
  if [[ -d /etc/cni/net.d ]]; then
    find /etc/cni/net.d -mindepth 1 \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) -delete
  fi
  rm -rf "$KUBEADM_ATTEMPTS"
}

# Run `kubeadm "$@"` (init or join) once on this node.
run_kubeadm_once() {
  local attempt="$KUBEADM_ATTEMPTS/$STAGE.attempt"
  if [[ -f "$attempt" ]]; then
    log "an earlier kubeadm $1 did not finish; resetting for a clean retry"
    reset_kubeadm
  elif kubeadm_left_files; then
    log "kubeadm $1 done before; skipped"
    return 0
  fi
  install -d -m 0755 "$KUBEADM_ATTEMPTS"
  touch "$attempt"
  run_logged "/var/log/kvm-kubeadm/$STAGE.log" kubeadm "$@"
  rm -f "$attempt"
  log "kubeadm $1 done"
}
