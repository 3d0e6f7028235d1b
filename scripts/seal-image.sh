#!/usr/bin/env bash
# Prepared image, last: take away what would give every clone the same identity,
# then power off. Each clone then boots as a fresh VM does: systemd makes its
# machine-id, cloud-init its SSH host keys, hostname and login.
set -euo pipefail
# @parameters

refuse_cluster_state() {
  if kubeadm_left_files || [[ -e /var/lib/kubelet/pki ]]; then
    fail "kubeadm or kubelet state on the image's builder: a prepared image must carry none"
  fi
}

forget_identity() {
  cloud-init clean --logs
  rm -f /etc/ssh/ssh_host_* /var/lib/dhcp/*.leases /etc/sudoers.d/90-cloud-init-users
  # An empty machine-id tells systemd to make one at boot (the D-Bus one links to it).
  : >/etc/machine-id
  [[ -L /var/lib/dbus/machine-id ]] || rm -f /var/lib/dbus/machine-id
  echo localhost >/etc/hostname
  rm -rf /var/log/journal/* /var/log/kvm-kubeadm
  # The build's login: each clone's cloud-init creates the stack's own.
  userdel --force --remove "$SSH_USER"
}

main() {
  refuse_cluster_state
  apt_get clean
  forget_identity
  # Blocks freed in the guest stay out of the image.
  fstrim --all >/dev/null 2>&1 || log "fstrim found nothing to trim"
  sync
  # Later than this script's end, so that its SSH session reports success.
  systemd-run --quiet --on-active=5 systemctl poweroff
  log "sealed; powering off"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
