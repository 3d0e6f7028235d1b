#!/usr/bin/env bash
# Stage kubeconfig (control plane): print the admin kubeconfig (a secret output).
set -euo pipefail
# @parameters

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || cat /etc/kubernetes/admin.conf
