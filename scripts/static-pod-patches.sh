#!/usr/bin/env bash
# Stage static-pod-patches (a joining control plane, before its join): the
# patches that kubeadm join applies to this node's static pods, as init had them.
set -euo pipefail
# @parameters

main() {
  write_files_into "$PATCHES_DIR" "${PATCHES[@]}"
  log "$((${#PATCHES[@]} / 2)) patch(es) in $PATCHES_DIR"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
