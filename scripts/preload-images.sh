#!/usr/bin/env bash
# Prepared image, after packages: pull into containerd every image a node of the
# cluster runs, so that no node waits for a download: kubeadm's, for the installed
# version, and those of the pod network and the addons, read from their manifests
# through kustomizations that only rename images (as the stages' own do).
set -euo pipefail
# @parameters

readonly CRI_ENDPOINT=unix:///run/containerd/containerd.sock
readonly CERTS_D=/etc/containerd/certs.d

# ctr (containerd's own client: crictl is not always installed) wants a full reference,
# while the kubelet reads a name without a registry as IMPLIED_REGISTRY's.
full_reference() {
  local first=${1%%/*}
  if [[ "$1" != */* ]]; then
    echo "$IMPLIED_REGISTRY/library/$1"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    echo "$IMPLIED_REGISTRY/$1"
  else
    echo "$1"
  fi
}

# The images the manifest $3, fetched from $4 into DIR $1, names through the kustomization $2.
manifest_images() {
  install -d -m 0755 "$1"
  printf '%s\n' "$2" >"$1/kustomization.yaml"
  fetch_once "$4" "$1/$3" >&2
  kubectl kustomize "$1" | sed -nE 's/^[[:space:]-]*image:[[:space:]]*"?([^"[:space:]]+)"?.*$/\1/p'
}

main() {
  local scratch i image
  run_logged "/var/log/kvm-kubeadm/$STAGE.log" kubeadm config images pull --image-repository "$IMAGE_REPOSITORY" \
    --kubernetes-version "$(kubeadm version -o short)" --cri-socket "$CRI_ENDPOINT"
  log "kubeadm's images pulled from $IMAGE_REPOSITORY"
  scratch=$(mktemp -d)
  for i in "${!MANIFEST_URLS[@]}"; do
    manifest_images "$scratch/$i" "${KUSTOMIZATIONS[$i]}" "${MANIFEST_FILES[$i]}" "${MANIFEST_URLS[$i]}"
  done | sort -u | while read -r image; do
    # Into the CRI's namespace, through the registry hosts the packages stage wrote.
    ctr --namespace k8s.io images pull --hosts-dir "$CERTS_D" "$(full_reference "$image")" >/dev/null
    log "pulled $image"
  done
  rm -rf "$scratch"
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
