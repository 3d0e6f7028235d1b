#!/usr/bin/env bash
# Stage restore (the leader, when snapshots.restoreFrom names a snapshot archive of the KVM host,
# before init): a new control plane from that snapshot. Its stdin is the init config, base64 on
# one line, then the archive (providers/etcd_snapshot.py's, sent from the host over ssh): the
# cluster's CAs and service-account keys go into place, etcd's data directory is restored from
# the snapshot as a one-member cluster of this node, and kubeadm init runs on them, so that the
# cluster comes back with what it held and the workers, who trust the same CA, keep working.
# Once: a node that has a cluster already is left alone (a restore is for a new control plane),
# and a failed attempt is retried from a reset node. The init stage then finds kubeadm done.
set -euo pipefail
# @parameters

readonly CONFIG=/etc/kubernetes/kubeadm-init.yaml
readonly ARCHIVE=/var/lib/kvm-kubeadm-restore
readonly UNFINISHED="$KUBEADM_ATTEMPTS/$STAGE.attempt"
readonly CERTS_D=/etc/containerd/certs.d

# etcdutl from etcd's own image (the one kubeadm runs), with the node's /var/lib.
etcdutl() {
  local image
  image=$(kubeadm config images list --config "$CONFIG" 2>/dev/null | grep '/etcd:')
  if [[ -z "$(ctr --namespace k8s.io images list --quiet "name==$image")" ]]; then
    ctr --namespace k8s.io images pull --hosts-dir "$CERTS_D" "$image" >/dev/null
  fi
  ctr --namespace k8s.io containers delete kvm-kubeadm-restore >/dev/null 2>&1 || true
  ctr --namespace k8s.io run --rm --mount type=bind,src=/var/lib,dst=/var/lib,options=rbind:rw \
    "$image" kvm-kubeadm-restore /usr/local/bin/etcdutl "$@"
}

restore_files() {
  local file
  rm -rf "$ARCHIVE"
  install -d -m 0700 "$ARCHIVE"
  tar -x -C "$ARCHIVE"
  (cd "$ARCHIVE" && sha256sum --check --quiet etcd.db.sha256) || fail "the snapshot does not match its sha256: a damaged archive"
  install -d -m 0755 /etc/kubernetes/pki/etcd
  for file in "${PKI_FILES[@]}"; do
    install -m "$([[ "$file" == *.key ]] && echo 0600 || echo 0644)" "$ARCHIVE/pki/$file" "/etc/kubernetes/pki/$file"
  done
  rm -rf /var/lib/etcd
  etcdutl snapshot restore "$ARCHIVE/etcd.db" --data-dir /var/lib/etcd --name "$NODE_NAME" \
    --initial-cluster "$NODE_NAME=$ETCD_PEER_URL" --initial-advertise-peer-urls "$ETCD_PEER_URL" >/dev/null
  log "restored: $(cat "$ARCHIVE/status.json")"
}

main() {
  local config
  IFS= read -r config
  write_secret_file "$CONFIG" < <(base64 -d <<<"$config")
  if [[ -f "$UNFINISHED" ]]; then
    log "an earlier restore did not finish; resetting for a clean retry"
    reset_kubeadm
  elif kubeadm_left_files; then
    log "this node has a cluster already; not restored"
    cat >/dev/null
    return 0
  fi
  install -d -m 0755 "$KUBEADM_ATTEMPTS"
  touch "$UNFINISHED"
  restore_files
  write_files_into "$PATCHES_DIR" "${PATCHES[@]}"
  # The data directory is the restored one, not a leftover.
  run_logged "/var/log/kvm-kubeadm/$STAGE.log" kubeadm init --config "$CONFIG" \
    --ignore-preflight-errors=DirAvailable--var-lib-etcd
  rm -rf "$UNFINISHED" "$ARCHIVE"
  log "kubeadm init done on the restored cluster"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
