#!/usr/bin/env bash
# Stage upgrade-apply (control plane, on a version change): the cluster's image
# repository set to the configured one, `kubeadm upgrade plan` as a check, then
# `kubeadm upgrade apply` to the version of this node's kubeadm, with the static
# pods' patches that init had. Skipped when the cluster runs that version
# already, unless an earlier apply did not finish.
set -euo pipefail
# @parameters

export KUBECONFIG=/etc/kubernetes/admin.conf
readonly CONFIG=/etc/kubernetes/kubeadm-upgrade.yaml
readonly PLAN_ATTEMPTS=3

cluster_configuration() {
  kubectl -n kube-system get configmap kubeadm-config -o 'jsonpath={.data.ClusterConfiguration}'
}

# kubeadm upgrades take the image repository from the cluster's ClusterConfiguration,
# not from a flag: make it the configured one, so that the new images come from there.
use_image_repository() {
  local current edited
  current=$(cluster_configuration)
  [[ "$(sed -n 's/^imageRepository: *//p' <<<"$current")" != "$IMAGE_REPOSITORY" ]] || return 0
  edited=$(mktemp)
  awk -v repository="$IMAGE_REPOSITORY" '/^imageRepository:/ { $0 = "imageRepository: " repository } { print }' \
    <<<"$current" >"$edited"
  kubectl -n kube-system create configmap kubeadm-config --from-file=ClusterConfiguration="$edited" \
    --dry-run=client -o yaml | kubectl replace -f - >/dev/null
  rm -f "$edited"
  log "kubeadm-config: imageRepository $IMAGE_REPOSITORY"
}

# `kubeadm upgrade plan` checks the cluster's health, and its check that a Job's pod runs to
# completion has a fixed 60 s, which a loaded, emulated control plane can miss. The plan
# changes nothing, so it is asked again; `upgrade apply` then skips that one check.
plan_upgrade() {
  local attempt
  for ((attempt = 1; ; attempt++)); do
    run_logged /var/log/kvm-kubeadm/upgrade-plan.log kubeadm upgrade plan "$1" --config "$CONFIG" && return 0
    ((attempt < PLAN_ATTEMPTS)) || return 1
    log "kubeadm upgrade plan attempt $attempt of $PLAN_ATTEMPTS failed; asking again"
  done
}

main() {
  local target attempt="$KUBEADM_ATTEMPTS/$STAGE.attempt"
  target=$(kubeadm version -o short)
  matches_version "$KUBE_VERSION" "$target" || fail "kubeadm is $target, not $KUBE_VERSION: upgrade-kubeadm must run first"
  if [[ ! -f "$attempt" && "$(cluster_configuration | sed -n 's/^kubernetesVersion: *//p')" == "$target" ]]; then
    log "the cluster runs $target already; skipped"
    return 0
  fi
  printf '%s' "$UPGRADE_CONFIG" >"$CONFIG"
  write_files_into "$PATCHES_DIR" "${PATCHES[@]}"
  use_image_repository
  plan_upgrade "$target"
  install -d -m 0755 "$KUBEADM_ATTEMPTS"
  touch "$attempt"
  run_logged "/var/log/kvm-kubeadm/$STAGE.log" kubeadm upgrade apply "$target" --config "$CONFIG" --yes
  rm -f "$attempt"
  log "kubeadm upgrade apply $target done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
