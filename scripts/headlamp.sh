#!/usr/bin/env bash
# Stage headlamp (cluster, on the control plane): apply the dashboard's
# manifest (rendered from config), remove the login's bindings of another
# access level, wait for the dashboard, and print the login's token on stdout
# (a secret output: everything else goes to stderr).
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf

# The token controller fills the login's token Secret moments after it exists.
login_token() {
  kubectl -n "$NAMESPACE" get secret "$TOKEN_SECRET" -o 'jsonpath={.data.token}' | base64 -d
}
has_login_token() { [[ -n "$(login_token 2>/dev/null)" ]]; }

install_dashboard() {
  install -d -m 0755 "$ADDON_DIR"
  printf '%s\n' "$MANIFEST" >"$ADDON_DIR/$MANIFEST_FILE"
  if ((${#STALE_BINDINGS[@]})); then
    kubectl delete clusterrolebinding --ignore-not-found "${STALE_BINDINGS[@]}"
  fi
  apply_kustomization "$ADDON_DIR" "$KUSTOMIZATION"
  kubectl -n "$NAMESPACE" rollout status deployment/headlamp --timeout="${TIMEOUT_SECONDS}s"
  wait_until "$TIMEOUT_SECONDS" has_login_token ||
    fail "the token of $TOKEN_SECRET is still empty after ${TIMEOUT_SECONDS}s; is kube-controller-manager running?"
  log "done"
}

main() {
  install_dashboard >&2
  login_token
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
