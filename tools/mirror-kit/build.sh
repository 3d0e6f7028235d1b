#!/usr/bin/env bash
# Build the whole offline mirror, from source on this machine, into the mirror
# directory (default .cache/mirror): the kube and containerd.io apt
# repositories, the container images in a registry's storage with flannel's
# manifest, and the partial Debian mirror. Each part does nothing when its
# stamps match. Serve it with tools/mirror-kit/serve.sh ADDRESS.
#
# Usage: tools/mirror-kit/build.sh [--out DIR] [--force]
set -euo pipefail

KIT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The partial Debian mirror resolves the dependencies of the kit's own packages,
# so it comes after them.
for part in build-debs build-images build-os-mirror; do
  "${KIT_DIR}/${part}.sh" "$@"
done
