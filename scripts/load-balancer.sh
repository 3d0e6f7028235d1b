#!/usr/bin/env bash
# Stage load-balancer (every control plane of a cluster with a VIP, before its
# init or join): keepalived and haproxy from the OS's packages, as kubeadm's HA
# guide describes them, with the configuration rendered for this node; each
# reloaded only when its file changed. Then wait until the VIP answers.
set -euo pipefail
# @parameters

# This node's interface on the node subnet: the one that holds its address.
node_interface() {
  ip -o -4 addr show | awk -v ip="$NODE_IP" 'index($4, ip "/") == 1 { print $2; exit }'
}

install_load_balancer() {
  command -v haproxy >/dev/null && command -v keepalived >/dev/null && return 0
  # A prepared image's lists may be older than the mirror's packages.
  apt_get install haproxy keepalived || { apt_get update && apt_get install haproxy keepalived; }
  log "haproxy and keepalived installed"
}

# Put CONTENT ($2) into FILE ($1) with MODE ($3) once CHECK (the rest) passes on it;
# CHANGED says whether the file changed.
CHANGED=0
install_checked() {
  local file=$1 content=$2 mode=$3 candidate
  shift 3
  CHANGED=0
  [[ ! -f "$file" || "$(cat "$file")" != "$content" ]] || return 0
  candidate=$(mktemp "$file.XXXXXX")
  printf '%s\n' "$content" >"$candidate"
  chmod "$mode" "$candidate"
  if ! "$@" "$candidate" >/dev/null 2>&1; then
    "$@" "$candidate" >&2 || true
    rm -f "$candidate"
    fail "the rendered $file does not pass its check"
  fi
  mv "$candidate" "$file"
  CHANGED=1
}

# Started when stopped, reloaded when its configuration changed ($2 = 1).
run_service() {
  systemctl enable "$1" >/dev/null 2>&1
  if ! systemctl is-active --quiet "$1"; then
    systemctl start "$1"
    log "$1 started"
  elif (($2)); then
    systemctl reload "$1"
    log "$1 reloaded"
  fi
}

vip_answers() { timeout 3 bash -c "exec 3<>/dev/tcp/$VIP/$LOAD_BALANCER_PORT" 2>/dev/null; }

main() {
  local interface haproxy_changed=0 keepalived_changed=0
  interface=$(node_interface)
  [[ -n "$interface" ]] || fail "no interface holds $NODE_IP"
  install_load_balancer
  install -d -m 0755 "$(dirname "$CHECK_SCRIPT_FILE")"
  install_checked "$CHECK_SCRIPT_FILE" "$CHECK_SCRIPT" 0700 true
  install_checked "$HAPROXY_CONFIG_FILE" "$HAPROXY_CONFIG" 0644 haproxy -c -q -f
  haproxy_changed=$CHANGED
  install_checked "$KEEPALIVED_CONFIG_FILE" "${KEEPALIVED_CONFIG//"$INTERFACE_MARK"/$interface}" 0644 keepalived -t -f
  keepalived_changed=$CHANGED
  run_service haproxy "$haproxy_changed"
  run_service keepalived "$keepalived_changed"
  wait_until "$TIMEOUT_SECONDS" vip_answers || fail "nothing answers on $VIP:$LOAD_BALANCER_PORT after ${TIMEOUT_SECONDS}s"
  log "the VIP $VIP answers on port $LOAD_BALANCER_PORT"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
