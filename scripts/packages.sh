#!/usr/bin/env bash
# Stage packages (every node): OS apt mirror, kubeadm/kubelet/kubectl from the
# pkgs.k8s.io layout (pinned and held; once: a new version comes only through the
# upgrade stages), containerd from Docker's containerd.io
# (pinned and held) or the guest's archive, with the systemd cgroup driver, the
# pause image from the configured image repository and the configured registry
# mirrors and trust in /etc/containerd/certs.d.
set -euo pipefail
# @parameters

readonly CONTAINERD_CONFIG=/etc/containerd/config.toml
readonly DOCKER_KEYRING=/etc/apt/keyrings/docker.asc
readonly DOCKER_LIST=/etc/apt/sources.list.d/docker.list
readonly CERTS_D=/etc/containerd/certs.d

# Point the OS archive entries (deb822 and one-line formats) at the mirror, keeping each path.
set_os_mirror() {
  [[ -n "$OS_APT_MIRROR" ]] || return 0
  local file changed=0 before
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/ubuntu.sources /etc/apt/sources.list.d/debian.sources; do
    [[ -f "$file" ]] || continue
    before=$(sha256sum "$file")
    sed -Ei \
      -e "s#^(URIs:[[:space:]]*)https?://[^/[:space:]]+/#\\1${OS_APT_MIRROR}/#" \
      -e "s#^(deb(-src)?([[:space:]]+\\[[^]]*\\])?[[:space:]]+)https?://[^/[:space:]]+/#\\1${OS_APT_MIRROR}/#" \
      "$file"
    [[ "$(sha256sum "$file")" == "$before" ]] || changed=1
  done
  if ((changed)); then
    log "OS apt sources point at $OS_APT_MIRROR"
    apt_get update
  fi
}

ensure_apt_lists() {
  if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    apt_get update
  fi
}

# apt only for what is missing: on a prepared image nothing is, and apt takes long under emulation.
install_missing() {
  local package missing=()
  for package in "$@"; do
    [[ -n "$(installed_version "$package")" ]] || missing+=("$package")
  done
  ((${#missing[@]} == 0)) || apt_get install "${missing[@]}"
}

# A fresh node gets the configured version. On a node that has them, the kube
# packages change only through the upgrade stages, control plane first: moving
# every kubelet at once would run kubelets newer than the API server.
install_kube_packages() {
  local kubeadm kubelet kubectl wanted
  use_kube_repo "$KUBE_REPO"
  kubeadm=$(installed_version kubeadm) kubelet=$(installed_version kubelet) kubectl=$(installed_version kubectl)
  if [[ -n "$kubeadm" && -n "$kubelet" && -n "$kubectl" ]]; then
    log "kubeadm $kubeadm, kubelet $kubelet, kubectl $kubectl installed; they change only through an upgrade"
    return 0
  fi
  wanted=$(newest_matching kubeadm "$KUBE_VERSION")
  [[ -n "$wanted" ]] || fail "no kubeadm package matches version $KUBE_VERSION in $KUBE_REPO"
  install_held "$wanted" kubelet kubeadm kubectl
  systemctl enable kubelet >/dev/null 2>&1 || true
}

# Set KEY = VALUE inside TOML table TABLE (quotes in the table path are ignored),
# replacing the key, adding it to the table, or adding the table at the end.
toml_set() {
  local file=$1 table=$2 key=$3 value=$4 tmp
  tmp=$(mktemp "$file.XXXXXX")
  awk -v table="$table" -v key="$key" -v value="$value" '
    function norm(s) { gsub(/["'\''[:space:]]/, "", s); return s }
    BEGIN { want = norm("[" table "]") }
    /^[[:space:]]*\[/ {
      if (inside && !done) { print key " = " value; done = 1 }
      inside = (norm($0) == want)
      print
      next
    }
    inside && !done && $0 ~ ("^[[:space:]]*" key "[[:space:]]*=") {
      match($0, /^[[:space:]]*/)
      print substr($0, 1, RLENGTH) key " = " value
      done = 1
      next
    }
    { print }
    END {
      if (inside && !done) { print key " = " value; done = 1 }
      if (!done) { print ""; print "[" table "]"; print key " = " value }
    }' "$file" >"$tmp"
  mv "$tmp" "$file"
}

add_docker_repo() {
  local id codename line
  id=$(sed -n 's/^ID=//p' /etc/os-release | tr -d '"')
  codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
  line="deb [signed-by=$DOCKER_KEYRING] $CONTAINERD_REPO/$id $codename stable"
  if [[ ! -s "$DOCKER_KEYRING" ]] || ! grep -qxF "$line" "$DOCKER_LIST" 2>/dev/null; then
    install -d -m 0755 /etc/apt/keyrings
    curl -fsSL --retry 5 -o "$DOCKER_KEYRING" "$CONTAINERD_REPO/$id/gpg"
    echo "$line" >"$DOCKER_LIST"
    apt_get update
    log "containerd package repo: $CONTAINERD_REPO/$id $codename"
  fi
}

# containerd.io from Docker's repository at the pinned version, or the guest's
# own containerd; held either way. A change of source replaces the other package.
install_containerd_package() {
  local package other wanted
  if [[ "$CONTAINERD_SOURCE" == docker ]]; then
    package=containerd.io other=containerd
    add_docker_repo
    wanted=$(newest_matching containerd.io "$CONTAINERD_VERSION")
    if [[ -z "$wanted" ]]; then
      echo "no containerd.io package matches version $CONTAINERD_VERSION in $CONTAINERD_REPO" >&2
      return 1
    fi
    [[ "$(installed_version containerd.io)" != "$wanted" ]] || return 0
  else
    package=containerd other=containerd.io
    [[ -z "$(installed_version containerd)" ]] || return 0
    wanted=$(apt-cache policy containerd | awk '$1 == "Candidate:" { print $2 }')
  fi
  apt-mark unhold containerd containerd.io >/dev/null 2>&1 || true
  if [[ -n "$(installed_version "$other")" ]]; then
    apt_get remove "$other"
    log "$other removed"
  fi
  apt_get install --allow-change-held-packages --allow-downgrades "$package=$wanted"
  apt-mark hold "$package" >/dev/null
  log "$package $wanted installed and held"
}

# /etc/containerd/certs.d holds exactly the configured registries' hosts.toml and
# CA files; containerd reads them at each pull, so no restart is needed.
write_registry_hosts() {
  local staged i
  staged=$(mktemp -d)
  for i in "${!CERTS_D_PATHS[@]}"; do
    install -d -m 0755 "$staged/$(dirname "${CERTS_D_PATHS[$i]}")"
    printf '%s' "${CERTS_D_FILES[$i]}" >"$staged/${CERTS_D_PATHS[$i]}"
  done
  chmod 0755 "$staged"
  if diff -r -q "$staged" "$CERTS_D" >/dev/null 2>&1; then
    rm -rf "$staged"
    return 0
  fi
  install -d -m 0755 "$(dirname "$CERTS_D")"
  rm -rf "$CERTS_D"
  mv "$staged" "$CERTS_D"
  log "registry hosts: ${#CERTS_D_PATHS[@]} file(s) in $CERTS_D"
}

# Edit a containerd config in place for either layout: config version 2
# (containerd 1.x) or versions 3 and 4 (containerd 2.x, where the CRI plugin was split).
configure_containerd() {
  local file=$1 pause_image=$2 version runc_table sandbox_table sandbox_key registry_table
  version=$(awk -F= '/^[[:space:]]*version[[:space:]]*=/ { gsub(/[[:space:]]/, "", $2); print $2; exit }' "$file")
  case "$version" in
    3 | 4)
      runc_table="plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options"
      sandbox_table="plugins.'io.containerd.cri.v1.images'.pinned_images"
      sandbox_key=sandbox
      registry_table="plugins.'io.containerd.cri.v1.images'.registry"
      ;;
    2)
      runc_table='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options'
      sandbox_table='plugins."io.containerd.grpc.v1.cri"'
      sandbox_key=sandbox_image
      registry_table='plugins."io.containerd.grpc.v1.cri".registry'
      ;;
    *)
      echo "unsupported containerd config version '${version:-none}' in $file" >&2
      return 1
      ;;
  esac
  toml_set "$file" "$runc_table" SystemdCgroup true
  toml_set "$file" "$sandbox_table" "$sandbox_key" "\"$pause_image\""
  toml_set "$file" "$registry_table" config_path "\"$CERTS_D\""
}

install_containerd() {
  install_containerd_package
  write_registry_hosts
  local pause_image candidate
  # kubeadm knows which pause image its release expects; ask it rather than pin a tag here.
  pause_image=$(kubeadm config images list --image-repository "$IMAGE_REPOSITORY" \
    --kubernetes-version "$(kubeadm version -o short)" | grep '/pause:' || true)
  if [[ -z "$pause_image" ]]; then
    echo "kubeadm named no pause image under $IMAGE_REPOSITORY" >&2
    return 1
  fi
  candidate=$(mktemp)
  containerd config default >"$candidate"
  configure_containerd "$candidate" "$pause_image"
  install -d -m 0755 /etc/containerd
  if ! cmp -s "$candidate" "$CONTAINERD_CONFIG"; then
    install -m 0644 "$candidate" "$CONTAINERD_CONFIG"
    systemctl restart containerd
    log "containerd configured: SystemdCgroup = true, sandbox $pause_image, registry hosts in $CERTS_D"
  fi
  rm -f "$candidate"
  systemctl enable --now containerd >/dev/null 2>&1 || true
}

main() {
  set_os_mirror
  ensure_apt_lists
  install_missing ca-certificates curl gpg
  install_kube_packages
  install_containerd
  log "done"
}

[[ -n "${KVMK_SOURCE_ONLY:-}" ]] || main
