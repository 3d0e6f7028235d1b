#!/usr/bin/env bash
# Set up a fresh checkout: the virtualenv with pinned dependencies and the
# Debian tools the unit tests call (shellcheck, ssh-keygen, openssl).
# With --full, also what the real-engine, real-tools, mirror and e2e tests
# need: the Pulumi/kubeadm/containerd toolchain built from Go modules, libvirt
# and QEMU, the Debian guest image and the offline mirror kit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

full=0
case "${1:-}" in
  --full) full=1 ;;
  "") ;;
  *)
    echo "usage: tools/setup.sh [--full]" >&2
    exit 2
    ;;
esac

need_debian=()
command -v shellcheck >/dev/null || need_debian+=(shellcheck)
command -v ssh-keygen >/dev/null || need_debian+=(openssh-client)
command -v openssl >/dev/null || need_debian+=(openssl)
if ((${#need_debian[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "missing ${need_debian[*]}: install them with apt-get (root needed)" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -q -y "${need_debian[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

if ((full)); then
  tools/install-e2e-deps.sh
  tools/build-toolchain.sh
  tools/build-guest-image.sh
  tools/mirror-kit/build.sh
fi
echo "setup done"
