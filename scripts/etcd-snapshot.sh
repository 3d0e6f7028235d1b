#!/usr/bin/env bash
# Stage etcd-snapshot (the leader, run over SSH by providers/etcd_snapshot.py): an etcd snapshot,
# checked by etcdutl, with the PKI that a restore needs, written to stdout as one tar archive
# (secret: it holds the cluster's CA keys). The archive holds etcd.db, its sha256 in
# etcd.db.sha256, etcdutl's status in status.json, and pki/.
set -euo pipefail
# @parameters
# @helpers etcd

export KUBECONFIG=/etc/kubernetes/admin.conf
# Inside etcd's pod /var/lib/etcd is the node's own directory: the snapshot is saved and checked there.
readonly SAVED=/var/lib/etcd/kvm-kubeadm-snapshot.db
readonly STAGING=/var/lib/kvm-kubeadm/snapshot

cleanup() { rm -rf "$SAVED" "$SAVED.part" "$STAGING"; }

main() {
  trap cleanup EXIT
  cleanup
  install -d -m 0700 "$STAGING" "$STAGING/pki/etcd"
  etcdctl snapshot save "$SAVED" >/dev/null 2>&1
  kubectl -n kube-system exec "etcd-$LEADER" -- etcdutl snapshot status "$SAVED" -w json >"$STAGING/status.json"
  mv "$SAVED" "$STAGING/etcd.db"
  (cd "$STAGING" && sha256sum etcd.db >etcd.db.sha256)
  local file
  for file in "${PKI_FILES[@]}"; do
    cp -p "/etc/kubernetes/pki/$file" "$STAGING/pki/$file"
  done
  tar -C "$STAGING" -cf - .
  log "snapshot taken: $(cat "$STAGING/status.json")" >&2
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
