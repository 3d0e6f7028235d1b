#!/usr/bin/env bash
# Build a Debian 12 (bookworm) guest image for the real-libvirt e2e test.
#
# Output (git-ignored cache), by default in <repo>/.cache/guest-image/:
#   debian-12-guest.qcow2  base disk: one ext4 filesystem, no partition table
#                          (boot it with root=/dev/vda)
#   vmlinuz, initrd.img    kernel and initrd copied from the image's /boot,
#                          for direct kernel boot:
#                            cmdline "root=/dev/vda rw console=ttyS0"
#   packages.txt           installed package versions
#   build-info.txt         build time and sizes
#   .stamp                 cache key; a rerun with the same key does nothing
#
# The image has no passwords and no SSH host keys: cloud-init (NoCloud
# datasource only, from a "cidata" seed ISO) creates the user, the host keys
# and the network config (DHCP on the first NIC when no network-config is
# given). /etc/machine-id is empty, so every VM gets its own on first boot.
#
# Needs root (mmdebstrap root mode keeps file ownership right for
# mkfs.ext4 -d), Debian package access, mmdebstrap, e2fsprogs and qemu-utils
# (tools/install-e2e-deps.sh installs them). No loop devices, no mounts.
#
# Usage: tools/build-guest-image.sh [--force]
# Environment (all part of the cache key):
#   GUEST_IMAGE_DIR       output dir (default <repo>/.cache/guest-image)
#   GUEST_DISK_SIZE       ext4 filesystem size (default 4G); an overlay may be
#                         bigger, cloud-init's resizefs then grows the fs
#   GUEST_KERNEL_PACKAGE  default linux-image-amd64
#   GUEST_EXTRA_PACKAGES  extra packages, comma separated (e.g. containerd)
#   DEBIAN_MIRROR         default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR default http://deb.debian.org/debian-security
set -euo pipefail

readonly SUITE=bookworm
SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd "$(dirname "${SCRIPT_PATH}")/.." && pwd)"
OUT_DIR="${GUEST_IMAGE_DIR:-${REPO_ROOT}/.cache/guest-image}"
DISK_SIZE="${GUEST_DISK_SIZE:-4G}"
KERNEL_PACKAGE="${GUEST_KERNEL_PACKAGE:-linux-image-amd64}"
EXTRA_PACKAGES="${GUEST_EXTRA_PACKAGES:-}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

readonly IMAGE_NAME=debian-12-guest.qcow2

PACKAGES=(
  # boot and init
  systemd systemd-sysv udev "${KERNEL_PACKAGE}" initramfs-tools
  # provisioning and access
  cloud-init openssh-server qemu-guest-agent sudo
  # networking: cloud-init renders /etc/network/interfaces.d (ENI) and
  # ifupdown runs dhclient
  ifupdown isc-dhcp-client iproute2 netbase iputils-ping
  # dbus: systemctl/hostnamectl as non-root, containerd's systemd cgroup driver
  dbus
  # what a kubeadm OS-prep script uses
  kmod procps util-linux ca-certificates curl gnupg iptables conntrack
  socat ethtool ebtables e2fsprogs
)
if [[ -n "${EXTRA_PACKAGES}" ]]; then
  IFS=',' read -r -a extra <<<"${EXTRA_PACKAGES}"
  PACKAGES+=("${extra[@]}")
fi

log() { printf '[build-guest-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${SCRIPT_PATH}"; exit 0 ;;
  *) die "unknown argument: $1 (usage: $0 [--force])" ;;
esac

# Cache key: this script's content plus every input that can change the image.
package_list="$(IFS=','; echo "${PACKAGES[*]}")"
stamp_key="$(
  {
    sha256sum <"${SCRIPT_PATH}"
    printf 'suite=%s\nsize=%s\npackages=%s\nmirror=%s\nsecurity=%s\n' \
      "${SUITE}" "${DISK_SIZE}" "${package_list}" "${MIRROR}" "${SECURITY_MIRROR}"
  } | sha256sum | cut -d' ' -f1
)"
stamp_file="${OUT_DIR}/.stamp"

outputs_present() {
  [[ -s "${OUT_DIR}/${IMAGE_NAME}" && -s "${OUT_DIR}/vmlinuz" && -s "${OUT_DIR}/initrd.img" ]]
}

if [[ ${force} -eq 0 && -f "${stamp_file}" ]] && outputs_present \
   && [[ "$(cat "${stamp_file}")" == "${stamp_key}" ]]; then
  log "up to date (${OUT_DIR}, key ${stamp_key:0:12})"
  exit 0
fi

[[ ${EUID} -eq 0 ]] || die "must run as root (mmdebstrap root mode + mkfs.ext4 -d keep ownership)"
for tool in mmdebstrap mkfs.ext4 qemu-img sha256sum flock; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} not found (run tools/install-e2e-deps.sh)"
done

mkdir -p "${OUT_DIR}"
# One build at a time per output dir; then leftovers of killed builds can go.
exec 9>"${OUT_DIR}/.lock"
if ! flock -n 9; then
  log "another build holds ${OUT_DIR}/.lock; waiting"
  flock 9
fi
if [[ ${force} -eq 0 && -f "${stamp_file}" ]] && outputs_present \
   && [[ "$(cat "${stamp_file}")" == "${stamp_key}" ]]; then
  log "up to date after waiting (${OUT_DIR})"
  exit 0
fi
find "${OUT_DIR}" -maxdepth 1 -name '.build.*' -type d -exec rm -rf {} +
work="$(mktemp -d "${OUT_DIR}/.build.XXXXXX")"
cleanup() { rm -rf "${work}"; }
trap cleanup EXIT

start="$(date +%s)"
rootfs="${work}/rootfs"
log "mmdebstrap ${SUITE} into ${rootfs}"
log "packages: ${package_list}"

mmdebstrap \
  --mode=root \
  --variant=minbase \
  --include="${package_list}" \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  "${SUITE}" "${rootfs}" \
  "deb ${MIRROR} ${SUITE} main" \
  "deb ${MIRROR} ${SUITE}-updates main" \
  "deb ${SECURITY_MIRROR} ${SUITE}-security main"

log "configuring the rootfs"
# cloud-init: only the NoCloud seed (a "cidata" ISO); None keeps cloud-init
# quiet when there is none. Without this it probes network datasources.
mkdir -p "${rootfs}/etc/cloud/cloud.cfg.d"
cat >"${rootfs}/etc/cloud/cloud.cfg.d/90-datasource.cfg" <<'CFG'
# written by tools/build-guest-image.sh
datasource_list: [ NoCloud, None ]
CFG
# C.UTF-8 is built into glibc: the default en_US.UTF-8 needs the locales
# package and makes cc_locale fail. RSA/DSA host keys cost seconds under TCG.
# There is no grub (direct kernel boot), so skip cc_grub_dpkg.
cat >"${rootfs}/etc/cloud/cloud.cfg.d/91-guest-defaults.cfg" <<'CFG'
# written by tools/build-guest-image.sh
locale: C.UTF-8
ssh_genkeytypes: [ ed25519, ecdsa ]
grub_dpkg:
  enabled: false
CFG
# one ext4 filesystem on the whole virtio disk
printf '%s\n' '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"${rootfs}/etc/fstab"
# ifupdown: cloud-init writes /etc/network/interfaces.d/50-cloud-init
mkdir -p "${rootfs}/etc/network/interfaces.d"
printf '%s\n' 'auto lo' 'iface lo inet loopback' '' 'source /etc/network/interfaces.d/*' \
  >"${rootfs}/etc/network/interfaces"
printf '%s\n' '127.0.0.1 localhost' '::1 localhost ip6-localhost ip6-loopback' >"${rootfs}/etc/hosts"
echo localhost >"${rootfs}/etc/hostname"
rm -f "${rootfs}/etc/resolv.conf"
# per-VM identity is made on first boot: host keys by cloud-init, machine-id
# by systemd (an empty file means "generate")
rm -f "${rootfs}"/etc/ssh/ssh_host_*
: >"${rootfs}/etc/machine-id"
if [[ -d "${rootfs}/var/lib/dbus" ]]; then
  ln -sf /etc/machine-id "${rootfs}/var/lib/dbus/machine-id"
fi
rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin
find "${rootfs}/var/log" -type f -name '*.log' -delete

# Kernel and initrd for direct kernel boot (the /vmlinuz and /initrd.img
# symlinks point at the installed version).
kernel="$(readlink -f "${rootfs}/vmlinuz" 2>/dev/null || true)"
initrd="$(readlink -f "${rootfs}/initrd.img" 2>/dev/null || true)"
if [[ ! -f "${kernel}" || ! -f "${initrd}" ]]; then
  kernel="$(find "${rootfs}/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)"
  initrd="$(find "${rootfs}/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)"
fi
[[ -f "${kernel}" && -f "${initrd}" ]] || die "no kernel/initrd in ${rootfs}/boot"
# resolve symlinks relative to the rootfs, not the host
case "${kernel}" in "${rootfs}"/*) ;; *) kernel="${rootfs}${kernel}" ;; esac
case "${initrd}" in "${rootfs}"/*) ;; *) initrd="${rootfs}${initrd}" ;; esac
install -m 0644 "${kernel}" "${work}/vmlinuz"
install -m 0644 "${initrd}" "${work}/initrd.img"
kernel_version="$(basename "${kernel}")"
kernel_version="${kernel_version#vmlinuz-}"

# shellcheck disable=SC2016  # dpkg-query format, not shell expansion
chroot "${rootfs}" dpkg-query -W -f='${Package}\t${Version}\n' >"${work}/packages.txt"

log "mkfs.ext4 -d (${DISK_SIZE})"
mkfs.ext4 -q -F -L root -d "${rootfs}" "${work}/disk.raw" "${DISK_SIZE}" >&2
log "qemu-img convert -> qcow2"
qemu-img convert -f raw -O qcow2 -c "${work}/disk.raw" "${work}/${IMAGE_NAME}"
rm -f "${work}/disk.raw"

end="$(date +%s)"
rootfs_size="$(du -sh "${rootfs}" | cut -f1)"
{
  printf 'suite: %s\n' "${SUITE}"
  printf 'kernel: %s\n' "${kernel_version}"
  printf 'built: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'build_seconds: %s\n' "$((end - start))"
  printf 'rootfs_size: %s\n' "${rootfs_size}"
  printf 'filesystem_size: %s\n' "${DISK_SIZE}"
  printf 'qcow2_bytes: %s\n' "$(stat -c %s "${work}/${IMAGE_NAME}")"
  printf 'initrd_bytes: %s\n' "$(stat -c %s "${work}/initrd.img")"
  printf 'cmdline: root=/dev/vda rw console=ttyS0\n'
  printf 'key: %s\n' "${stamp_key}"
} >"${work}/build-info.txt"

# Publish: stamp last, so an interrupted run never looks up to date.
rm -f "${stamp_file}"
for f in "${IMAGE_NAME}" vmlinuz initrd.img packages.txt build-info.txt; do
  mv -f "${work}/${f}" "${OUT_DIR}/${f}"
done
printf '%s\n' "${stamp_key}" >"${stamp_file}"

log "done in $((end - start)) s: $(du -h "${OUT_DIR}/${IMAGE_NAME}" | cut -f1) qcow2, rootfs ${rootfs_size}, kernel ${kernel_version}"
cat "${OUT_DIR}/build-info.txt" >&2
