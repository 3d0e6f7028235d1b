#!/usr/bin/env bash
# Install the Debian packages that the real-libvirt end-to-end test needs:
# QEMU (software emulation), libvirtd + virsh, dnsmasq for libvirt's NAT
# networks, and mmdebstrap + e2fsprogs + qemu-img to build the guest image;
# also what the offline mirror kit (tools/mirror-kit) builds and signs with,
# and haproxy + keepalived, whose config checks the real-tools tests run.
#
# Idempotent: packages already installed are skipped; apt-get update runs only
# when something is missing.  Must run as root on Debian 12 (bookworm).
#
# The libvirt, haproxy and keepalived postinst scripts try to start services;
# on a machine without systemd (or in a container) that fails harmlessly: dpkg
# still configures the packages (policy-rc.d blocks the start attempts here so
# the install never hangs or half-starts a daemon in the host's network).
set -euo pipefail

PACKAGES=(
  qemu-system-x86      # qemu-system-x86_64 (TCG; nested KVM is unusable here)
  qemu-utils           # qemu-img
  libvirt-daemon-system
  libvirt-clients      # virsh
  dnsmasq-base         # DHCP/DNS for libvirt networks
  iproute2             # ip netns
  iptables             # libvirt's NAT rules (nftables backend)
  mmdebstrap           # guest rootfs
  e2fsprogs            # mkfs.ext4 -d
  openssh-client       # ssh into guests, ssh-keygen
  procps               # pgrep/ps for the harness's cleanup checks
  python3
  # the offline mirror kit (tools/mirror-kit/build-debs.sh) and its test
  apt-utils            # apt-ftparchive: Packages and Release files
  dpkg-dev             # dpkg-shlibdeps: containerd.io's Depends
  gnupg                # the mirror's signing key, InRelease/Release.gpg
  xz-utils
  gcc libc6-dev pkg-config libseccomp-dev   # runc's cgo build with seccomp
  # the offline mirror kit's images (tools/mirror-kit/build-images.sh; gcc and
  # libc6-dev above also build pause and flanneld's cgo)
  binutils             # readelf, strip
  libcap2-bin          # setcap: coredns binds port 53 as a non-root user
  openssl curl         # the kit CA and certificates; registry readiness
  # the real-tools tests judge the rendered load-balancer configs
  # (components/load_balancer.py) as scripts/load-balancer.sh does on a node
  haproxy              # haproxy -c -f FILE
  keepalived           # keepalived -t -f FILE
)

if [[ ${EUID} -ne 0 ]]; then
  echo "install-e2e-deps.sh: must run as root" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("${pkg}")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-e2e-deps.sh: all packages already installed"
else
  echo "install-e2e-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep maintainer scripts from starting daemons (exit 101 = "action
  # forbidden"); remove our policy-rc.d afterwards only if we created it.
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup() {
    if [[ ${created_policy} -eq 1 ]]; then
      rm -f /usr/sbin/policy-rc.d
    fi
  }
  trap cleanup EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Sanity check: the tools the harness and image builder call.
for tool in qemu-system-x86_64 qemu-img libvirtd virtlogd virsh dnsmasq ip \
            mmdebstrap mkfs.ext4 ssh ssh-keygen apt-ftparchive dpkg-shlibdeps gpg; do
  if ! command -v "${tool}" >/dev/null 2>&1; then
    echo "install-e2e-deps.sh: ${tool} still missing after install" >&2
    exit 1
  fi
done
echo "install-e2e-deps.sh: ok"
