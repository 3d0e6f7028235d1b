# Shared helpers, placed into every rendered stage script after its parameters.
# shellcheck shell=bash

log() { printf '[%s %s] %s\n' "$STAGE" "$NODE_NAME" "$*"; }

# Stop the stage with a message that names it and the node.
fail() {
  printf '[%s %s] %s\n' "$STAGE" "$NODE_NAME" "$*" >&2
  return 1
}

# Output that may quote a bootstrap token or CA hash is passed through this before it is shown.
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g; s/sha256:[0-9a-f]{64}/sha256:<hash>/g'; }

# Run the command that follows every 5 s until it succeeds; give up after $1 seconds.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 5
  done
}

# Write stdin (a secret: it may hold a token) to FILE, readable by root only.
write_secret_file() {
  install -d -m 0755 "$(dirname "$1")"
  (umask 077 && cat >"$1")
}

# Make DIR hold exactly the files that follow as name and content pairs; without any, no DIR.
write_files_into() {
  local dir=$1
  shift
  rm -rf "$dir"
  (($#)) || return 0
  install -d -m 0755 "$dir"
  while (($#)); do
    printf '%s' "$2" >"$dir/$1"
    shift 2
  done
}

# Download URL to FILE once; again only when the URL changes (FILE.source records it).
fetch_once() {
  local url=$1 file=$2
  if [[ -s "$file" && "$(cat "$file.source" 2>/dev/null)" == "$url" ]]; then
    return 0
  fi
  curl -fsSL --retry 5 -o "$file.part" "$url"
  mv "$file.part" "$file"
  echo "$url" >"$file.source"
  log "fetched $url"
}

# Apply the kustomization $2 from DIR $1, next to the files that follow as name and URL pairs
# (each fetched once): an addon or the pod network, always from the same directory, so that
# `kubectl delete -k DIR` removes what was applied.
apply_kustomization() {
  local dir=$1
  install -d -m 0755 "$dir"
  printf '%s\n' "$2" >"$dir/kustomization.yaml"
  shift 2
  while (($#)); do
    fetch_once "$2" "$dir/$1"
    shift 2
  done
  kubectl apply -k "$dir"
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
  # An explicit return: callers may test this function, which turns `set -e` off inside it.
  run_logged "/var/log/kvm-kubeadm/$STAGE.log" kubeadm "$@" || return 1
  rm -f "$attempt"
  log "kubeadm $1 done"
}

# --- apt and the kube packages -----------------------------------------------------

# Dpkg::Use-Pty=0: no progress bars in the stage's log.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confold "$@"
}

# Does version $2 (a package's, or a kubelet's with its leading v) match the configured
# $1? 1.36 matches 1.36.x-y; 1.36.3 matches 1.36.3-y and v1.36.3 (not 1.36.30-y).
matches_version() {
  local version=${2#v}
  [[ "$version" == "$1" || "$version" == "$1"-* || "$version" == "$1".* ]]
}

# The newest version of package $1 in the apt sources that matches $2, or nothing.
newest_matching() {
  apt-cache madison "$1" | awk '{ print $3 }' | while read -r candidate; do
    if matches_version "$2" "$candidate"; then echo "$candidate"; fi
  done | sort -V | tail -n 1
}

# The installed version of package $1, or nothing (dpkg-query fails for a package it never saw).
# The status's second letter says installed; the first is the selection (i, or h when held).
installed_version() {
  { dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$1" 2>/dev/null || true; } |
    awk 'substr($1, 2, 1) == "i" { print $2 }'
}

# Point apt at the kube package repository $1 (pkgs.k8s.io layout: one per minor version).
readonly KUBE_KEYRING=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
readonly KUBE_LIST=/etc/apt/sources.list.d/kubernetes.list
use_kube_repo() {
  local line="deb [signed-by=$KUBE_KEYRING] $1 /"
  if [[ -s "$KUBE_KEYRING" ]] && grep -qxF "$line" "$KUBE_LIST" 2>/dev/null; then
    return 0
  fi
  install -d -m 0755 /etc/apt/keyrings
  curl -fsSL --retry 5 "${1}Release.key" | gpg --dearmor --yes -o "$KUBE_KEYRING"
  echo "$line" >"$KUBE_LIST"
  apt_get update
  log "kube package repo: $1"
}

# Install packages $2... at version $1 and hold them; never a downgrade.
install_held() {
  local wanted=$1 package installed
  shift
  for package in "$@"; do
    installed=$(installed_version "$package")
    if [[ -n "$installed" ]] && dpkg --compare-versions "$installed" gt "$wanted"; then
      fail "$package $installed is newer than $wanted; a downgrade needs a new node"
    fi
  done
  apt_get install --allow-change-held-packages "${@/%/=$wanted}"
  apt-mark hold "$@" >/dev/null
  log "$* $wanted installed and held"
}

# The status of node $1's Ready condition (True, False or Unknown) as the API server ($KUBECONFIG) has it.
ready_condition() {
  kubectl get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
}

# The kubelet version node $1 reports to the API server ($KUBECONFIG), or nothing.
reported_kubelet_version() {
  kubectl get node "$1" -o 'jsonpath={.status.nodeInfo.kubeletVersion}' 2>/dev/null || true
}
