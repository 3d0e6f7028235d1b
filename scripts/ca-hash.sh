#!/usr/bin/env bash
# Stage ca-hash (control plane): print the discovery hash of the cluster CA,
# sha256 over its SubjectPublicKeyInfo (the kubeadm recipe; RSA or ECDSA).
set -euo pipefail
# @parameters

ca_hash() {
  openssl x509 -pubkey -noout -in "$1" |
    openssl pkey -pubin -outform der |
    sha256sum | awk '{ print "sha256:" $1 }'
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || ca_hash "$CA_CERT"
