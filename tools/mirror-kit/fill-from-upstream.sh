#!/usr/bin/env bash
# Fill the offline mirror's layout from the real upstream locations instead of
# building it from source: on a machine connected to them, to carry the mirror
# directory into an air-gapped site and serve it there with serve.sh ADDRESS.
# Same layout, same stack config as tools/mirror-kit/build.sh:
#
#   www/kubernetes/v<MAJOR.MINOR>/deb/  kubeadm, kubelet, kubectl MIRROR_KUBE_VERSION and each
#                                       MIRROR_KUBE_UPGRADE_FROM, and what they depend on from that
#                                       repository (kubernetes-cni, cri-tools if named), from
#                                       KUBE_UPSTREAM/v<MAJOR.MINOR>/deb/
#   www/docker/linux/debian/            containerd.io MIRROR_CONTAINERD_VERSION from
#                                       DOCKER_UPSTREAM/linux/debian bookworm stable
#   registry/                           every image `kubeadm config images list` names for each of
#                                       those versions, and metrics-server's, from IMAGES_UPSTREAM;
#                                       the two kube-flannel.yml names, from FLANNEL_IMAGES_UPSTREAM;
#                                       local-path-provisioner's, from LOCAL_PATH_IMAGES_UPSTREAM;
#                                       and Headlamp's, from HEADLAMP_IMAGES_UPSTREAM: only a filled
#                                       kit has it (build-images.sh cannot build it, the module proxy
#                                       refuses its Go backend). linux/amd64, at the kit's paths
#                                       (registry.k8s.io/, ghcr.io/, docker.io/<path> -> <path>;
#                                       coredns/coredns:<tag> also as coredns:<tag>, and
#                                       metrics-server/metrics-server:<tag> as metrics-server:<tag>)
#   www/flannel/<version>/              kube-flannel.yml of MIRROR_FLANNEL_VERSION (FLANNEL_UPSTREAM)
#   www/metrics-server/<version>/       components.yaml of MIRROR_METRICS_SERVER_VERSION
#                                       (METRICS_SERVER_UPSTREAM)
#   www/local-path-provisioner/<version>/
#                                       local-path-storage.yaml of MIRROR_LOCAL_PATH_VERSION
#                                       (LOCAL_PATH_UPSTREAM)
#   www/debian/, www/debian-security/   build-os-mirror.sh, which fills them from Debian's archive
#
# Packages: a private apt state per repository (<out>/build/upstream/{kube,docker}/:
# its own sources.list, signed-by the key the repository publishes, none of the
# host's apt configuration); apt-get update checks the repository's signature
# and apt-get download each .deb against the signed index. The repositories
# are then indexed and signed again with the mirror's own key (lib.sh
# mk_publish_repo), as build-debs.sh publishes them. Images: crane copy
# --platform linux/amd64 into a registry started on 127.0.0.1 for the copy
# (crane and the registry are the kit tools images/serving.sh builds).
#
# Usage: tools/mirror-kit/fill-from-upstream.sh [--out DIR] [--force] [OPTION...] [STEP...]
#   --out DIR                     the mirror directory (default <repo>/.cache/mirror); apt's
#                                 _apt user must reach it (build-os-mirror.sh downloads as _apt)
#   --force                       ignore the stamps: rebuild crane and the registry, publish both
#                                 repositories again, build-os-mirror.sh --force
#   --kube-upstream URL           KUBE_UPSTREAM (default https://pkgs.k8s.io/core:/stable:)
#   --docker-upstream URL         DOCKER_UPSTREAM (default https://download.docker.com)
#   --images-upstream REG         IMAGES_UPSTREAM (default registry.k8s.io)
#   --flannel-images-upstream REG FLANNEL_IMAGES_UPSTREAM (default ghcr.io)
#   --local-path-images-upstream REG
#                                 LOCAL_PATH_IMAGES_UPSTREAM (default docker.io)
#   --headlamp-images-upstream REG
#                                 HEADLAMP_IMAGES_UPSTREAM (default ghcr.io)
#   --flannel-upstream URL        FLANNEL_UPSTREAM, {version} = MIRROR_FLANNEL_VERSION (default
#                                 https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml)
#   --metrics-server-upstream URL METRICS_SERVER_UPSTREAM, {version} = MIRROR_METRICS_SERVER_VERSION
#                                 (default https://github.com/kubernetes-sigs/metrics-server/releases/
#                                 download/{version}/components.yaml)
#   --local-path-upstream URL     LOCAL_PATH_UPSTREAM, {version} = MIRROR_LOCAL_PATH_VERSION (default
#                                 https://raw.githubusercontent.com/rancher/local-path-provisioner/
#                                 {version}/deploy/local-path-storage.yaml)
#   STEP                          deps, kube-packages, docker-packages, manifests, images,
#                                 os-mirror (default: all, in that order)
# Each upstream may also come from the environment variable of that name; a
# registry upstream must hold the same repository paths as the real one.
# build-os-mirror.sh reads DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR. crane
# trusts SSL_CERT_FILE (default: the system's CA bundle) and the kit CA.
# Versions: tools/versions.env. A second run with nothing changed upstream
# downloads, publishes and copies nothing; each step's duration goes to
# <out>/logs/times.log.
set -euo pipefail
umask 022

KIT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${KIT_DIR}/lib.sh"
# shellcheck source=SCRIPTDIR/images/serving.sh
source "${KIT_DIR}/images/serving.sh"
mk_init fill-from-upstream "$@"

FLANNEL_UPSTREAM_DEFAULT='https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml'
METRICS_SERVER_UPSTREAM_DEFAULT='https://github.com/kubernetes-sigs/metrics-server/releases/download/{version}/components.yaml'
LOCAL_PATH_UPSTREAM_DEFAULT='https://raw.githubusercontent.com/rancher/local-path-provisioner/{version}/deploy/local-path-storage.yaml'
KUBE_UPSTREAM="${KUBE_UPSTREAM:-https://pkgs.k8s.io/core:/stable:}"
DOCKER_UPSTREAM="${DOCKER_UPSTREAM:-https://download.docker.com}"
IMAGES_UPSTREAM="${IMAGES_UPSTREAM:-registry.k8s.io}"
FLANNEL_IMAGES_UPSTREAM="${FLANNEL_IMAGES_UPSTREAM:-ghcr.io}"
LOCAL_PATH_IMAGES_UPSTREAM="${LOCAL_PATH_IMAGES_UPSTREAM:-docker.io}"
HEADLAMP_IMAGES_UPSTREAM="${HEADLAMP_IMAGES_UPSTREAM:-ghcr.io}"
FLANNEL_UPSTREAM="${FLANNEL_UPSTREAM:-${FLANNEL_UPSTREAM_DEFAULT}}"
METRICS_SERVER_UPSTREAM="${METRICS_SERVER_UPSTREAM:-${METRICS_SERVER_UPSTREAM_DEFAULT}}"
LOCAL_PATH_UPSTREAM="${LOCAL_PATH_UPSTREAM:-${LOCAL_PATH_UPSTREAM_DEFAULT}}"
STEPS=(deps kube-packages docker-packages manifests images os-mirror)
WANTED=()
set -- "${MK_ARGS[@]}"
while (($#)); do
  case "$1" in
    --kube-upstream) KUBE_UPSTREAM="${2:?--kube-upstream needs a URL}" && shift ;;
    --docker-upstream) DOCKER_UPSTREAM="${2:?--docker-upstream needs a URL}" && shift ;;
    --images-upstream) IMAGES_UPSTREAM="${2:?--images-upstream needs a registry}" && shift ;;
    --flannel-images-upstream) FLANNEL_IMAGES_UPSTREAM="${2:?--flannel-images-upstream needs a registry}" && shift ;;
    --local-path-images-upstream) LOCAL_PATH_IMAGES_UPSTREAM="${2:?--local-path-images-upstream needs a registry}" && shift ;;
    --headlamp-images-upstream) HEADLAMP_IMAGES_UPSTREAM="${2:?--headlamp-images-upstream needs a registry}" && shift ;;
    --flannel-upstream) FLANNEL_UPSTREAM="${2:?--flannel-upstream needs a URL}" && shift ;;
    --metrics-server-upstream) METRICS_SERVER_UPSTREAM="${2:?--metrics-server-upstream needs a URL}" && shift ;;
    --local-path-upstream) LOCAL_PATH_UPSTREAM="${2:?--local-path-upstream needs a URL}" && shift ;;
    -*) mk_die "unknown option $1 (see --help)" ;;
    *)
      [[ " ${STEPS[*]} " == *" $1 "* ]] || mk_die "unknown step '$1' (steps: ${STEPS[*]})"
      WANTED+=("$1")
      ;;
  esac
  shift
done
KUBE_UPSTREAM="${KUBE_UPSTREAM%/}"
DOCKER_UPSTREAM="${DOCKER_UPSTREAM%/}"
IMAGES_UPSTREAM="${IMAGES_UPSTREAM%/}"
FLANNEL_IMAGES_UPSTREAM="${FLANNEL_IMAGES_UPSTREAM%/}"
LOCAL_PATH_IMAGES_UPSTREAM="${LOCAL_PATH_IMAGES_UPSTREAM%/}"
HEADLAMP_IMAGES_UPSTREAM="${HEADLAMP_IMAGES_UPSTREAM%/}"

ARCH="$(dpkg --print-architecture)"
mk_kube_versions
KUBE_MINOR="$(cut -d. -f1,2 <<<"${MIRROR_KUBE_VERSION#v}")"
# Where build-debs.sh publishes the two repositories.
KUBE_REPO_DIR="${MK_WWW}/kubernetes/v${KUBE_MINOR}/deb"
DOCKER_ROOT="${MK_WWW}/docker/linux/${MIRROR_DOCKER_DISTRO}"
DOCKER_POOL="dists/${MIRROR_DOCKER_SUITE}/pool/stable/${ARCH}"
STATE="${MK_BUILD}/upstream"
FILL_REGISTRY=fill-registry

step_deps() {
  # apt-utils: apt-ftparchive; gnupg: the keys; curl: keys and kube-flannel.yml;
  # openssl: the kit CA; python3: a free port; ca-certificates: the https upstreams.
  mk_require_debs apt apt-utils gnupg curl ca-certificates openssl python3
}

# ---------------------------------------------------------------------------
# apt repositories
# ---------------------------------------------------------------------------
# upstream_apt NAME CMD...: CMD with the private apt state of repository NAME.
upstream_apt() { APT_CONFIG="${STATE}/$1/apt.conf" "${@:2}"; }

# upstream_update NAME KEY_URL SOURCE: the private apt state of NAME trusts only
# the key published at KEY_URL for its one line "deb SOURCE"; apt-get update.
upstream_update() {
  local name="$1" key_url="$2" source="$3" dir="${STATE}/$1" out
  mkdir -p "${dir}/lists/partial" "${dir}/cache/archives/partial" "${dir}/empty"
  : >"${dir}/status"
  curl -fsSL --retry 3 -o "${dir}/key.download" "${key_url}" || mk_die "cannot fetch ${key_url}"
  install -d -m 0700 "${dir}/gnupg"
  if grep -q -- '-----BEGIN PGP PUBLIC KEY BLOCK-----' "${dir}/key.download"; then
    gpg --homedir "${dir}/gnupg" --batch --quiet --yes --dearmor -o "${dir}/key.gpg" "${dir}/key.download"
  else
    mv -f "${dir}/key.download" "${dir}/key.gpg"
  fi
  mk_log "${name}: ${source}, signed by $(gpg --homedir "${dir}/gnupg" --batch --quiet --show-keys --with-colons \
    "${dir}/key.gpg" | awk -F: '$1 == "fpr" { print $10; exit }') (${key_url})"
  printf 'deb [signed-by=%s] %s\n' "${dir}/key.gpg" "${source}" >"${dir}/sources.list"
  cat >"${dir}/apt.conf" <<CONF
Dir::Etc { SourceList "${dir}/sources.list"; SourceParts "${dir}/empty"; Parts "${dir}/empty"; };
Dir::Etc { Preferences "${dir}/empty/preferences"; PreferencesParts "${dir}/empty"; };
Dir::State { Lists "${dir}/lists"; status "${dir}/status"; };
Dir::Cache "${dir}/cache";
APT { Architectures { "${ARCH}"; }; Sandbox::User "root"; }; // the mirror directory need not be _apt's
Acquire { Languages "none"; Retries "3"; };
CONF
  out="$(upstream_apt "${name}" apt-get -q update 2>&1)" || mk_die "apt-get update of ${source} failed:"$'\n'"${out}"
  if grep -E '^(W|E|Err):' <<<"${out}" >&2; then
    mk_die "apt-get update of ${source} reported the problems above"
  fi
}

# newest_version NAME PKG UPSTREAM_VERSION: PKG's newest UPSTREAM_VERSION-<revision> in NAME.
newest_version() {
  upstream_apt "$1" apt-cache madison "$2" | awk -v want="$3-" 'index($3, want) == 1 { print $3 }' |
    sort -V | tail -n 1
}

# closure NAME PKG=VERSION...: those packages (a package may come at several
# versions) and, transitively, what they depend on or recommend that repository
# NAME holds, at its candidate version (as apt on a node picks them); one
# PKG=VERSION a line.
closure() {
  local name="$1" pkg spec
  shift
  {
    printf '%s\n' "$@"
    upstream_apt "${name}" apt-cache depends --recurse --no-suggests --no-conflicts --no-breaks --no-replaces \
      --no-enhances "$@" | grep -v '^[[:space:]<]' | LC_ALL=C sort -u | while read -r pkg; do
      for spec in "$@"; do
        [[ "${spec%%=*}" != "${pkg}" ]] || continue 2
      done
      printf '%s=%s\n' "${pkg}" "$(upstream_apt "${name}" apt-cache policy "${pkg}" | awk '$1 == "Candidate:" { print $2 }')"
    done
  } | LC_ALL=C sort
}

# fill_repo NAME POOL INRELEASE "PKG=VERSION..." PUBLISH_ARG...: POOL holds
# exactly the .debs of the closure of the packages in repository NAME (a file
# already there with the index's hash is kept, the others come from apt-get
# download, which checks them against the signed index); then, unless the
# stamp upstream-NAME matches, mk_publish_repo PUBLISH_ARG... (which writes
# INRELEASE) signs the repository with the mirror's key.
fill_repo() {
  local name="$1" pool="$2" inrelease="$3" spec uri file size sum algo manifest="" resolved
  local -a specs=() fetch=() files=()
  read -r -a specs <<<"$4"
  shift 4
  resolved="$(closure "${name}" "${specs[@]}")" || mk_die "${name}: cannot resolve ${specs[*]}"
  mapfile -t specs <<<"${resolved}"
  mk_log "${name}: ${specs[*]}"
  mkdir -p "${pool}"
  for spec in "${specs[@]}"; do
    read -r uri file size sum < <(upstream_apt "${name}" apt-get download --print-uris "${spec}")
    [[ -n "${sum}" ]] || mk_die "${name}: no download for ${spec} (${uri})"
    manifest+="${file} ${size} ${sum}"$'\n'
    files+=("${file}")
    # SUM is the strongest hash the index lists, e.g. SHA512:<hex>: checked by sha512sum.
    algo="${sum%%:*}"
    if ! "${algo,,}sum" -c --status <<<"${sum#*:}  ${pool}/${file}" 2>/dev/null; then
      fetch+=("${spec}")
    fi
  done
  if ((${#fetch[@]})); then
    mk_log "${name}: apt-get download ${fetch[*]}"
    (cd "${pool}" && upstream_apt "${name}" apt-get -q download "${fetch[@]}") >&2
  fi
  while IFS= read -r -d '' file; do
    [[ " ${files[*]} " == *" ${file##*/} "* ]] || { rm -f "${file}" && mk_log "${name}: removed ${file##*/}"; }
  done < <(find "${pool}" -maxdepth 1 -name '*.deb' -print0)
  # Published once per set of .debs (and mirror key, and kit code).
  if mk_stamp_ok "upstream-${name}" "$(published_key "${manifest}")" "${inrelease}"; then
    mk_log "${name}: published repository up to date"
  else
    mk_publish_repo "$@"
    mk_stamp_write "upstream-${name}" "$(published_key "${manifest}")"
  fi
}

# published_key MANIFEST: what a published repository depends on: its .debs
# (file, size, hash), the mirror's key, lib.sh and this script.
published_key() {
  printf 'debs=%s mirror-key=%s kit=%s\n' "$(sha256sum <<<"$1" | cut -c1-16)" "$(mk_key_fingerprint)" \
    "$(mk_hash "${KIT_DIR}/lib.sh" "${BASH_SOURCE[0]}" | cut -c1-16)"
}

step_kube_packages() {
  local source="${KUBE_UPSTREAM}/v${KUBE_MINOR}/deb/" cmd kube version packages=""
  upstream_update kube "${source}Release.key" "${source} /"
  for kube in "${MK_KUBE_VERSIONS[@]}"; do
    for cmd in kubeadm kubelet kubectl; do
      version="$(newest_version kube "${cmd}" "${kube#v}")"
      [[ -n "${version}" ]] || mk_die "no ${cmd} ${kube#v}-* in ${source}"
      packages+="${cmd}=${version} "
    done
  done
  MK_REPO_ORIGIN="kvm-kubeadm mirror of pkgs.k8s.io" MK_REPO_LABEL="kubernetes v${KUBE_MINOR}" \
    fill_repo kube "${KUBE_REPO_DIR}/${ARCH}" "${KUBE_REPO_DIR}/InRelease" "${packages}" \
    flat "${KUBE_REPO_DIR}" Release.key
}

step_docker_packages() {
  local source="${DOCKER_UPSTREAM}/linux/${MIRROR_DOCKER_DISTRO}" version
  upstream_update docker "${source}/gpg" "${source} ${MIRROR_DOCKER_SUITE} stable"
  version="$(newest_version docker containerd.io "${MIRROR_CONTAINERD_VERSION#v}")"
  [[ -n "${version}" ]] || mk_die "no containerd.io ${MIRROR_CONTAINERD_VERSION#v}-* in ${source}"
  MK_REPO_ORIGIN="kvm-kubeadm mirror of download.docker.com" MK_REPO_LABEL="Docker CE" \
    fill_repo docker "${DOCKER_ROOT}/${DOCKER_POOL}" "${DOCKER_ROOT}/dists/${MIRROR_DOCKER_SUITE}/InRelease" \
    "containerd.io=${version}" dists "${DOCKER_ROOT}" "${MIRROR_DOCKER_SUITE}" stable "${DOCKER_POOL}" gpg
}

# ---------------------------------------------------------------------------
# the manifests (images/serving.sh kit_manifest: where, which images) and the images
# ---------------------------------------------------------------------------
# fill_manifest NAME URL: the kit's copy of manifest NAME from URL, {version}
# standing for its pinned release.
fill_manifest() {
  local placeholder='{version}' url tmp="${STATE}/manifest-$1"
  kit_manifest "$1"
  url="${2//"${placeholder}"/${MANIFEST_VERSION}}"
  curl -fsSL --retry 3 -o "${tmp}" "${url}" || mk_die "cannot fetch ${url}"
  kit_pin_manifest "$1" "${tmp}" "${url}"
}

step_manifests() {
  mkdir -p "${STATE}"
  fill_manifest flannel "${FLANNEL_UPSTREAM}"
  fill_manifest metrics-server "${METRICS_SERVER_UPSTREAM}"
  fill_manifest local-path "${LOCAL_PATH_UPSTREAM}"
}

# image_plan: "SOURCE PATH:TAG ALIAS" a line (ALIAS - for none): every image
# kubeadm lists for each kit version (the pinned list when there is no
# .toolchain/bin/kubeadm; for an older patch release the toolchain's kubeadm
# names its own etcd, coredns and pause, which build-images.sh checks against
# that release's kubeadm), kube-flannel.yml's two and the addons' pinned
# images, each with its upstream and its path in the kit.
image_plan() {
  local kubeadm="${MK_ROOT}/.toolchain/bin/kubeadm" ref path refs="" kube flannel upstream alias
  [[ -x "${kubeadm}" ]] || mk_log "no ${kubeadm} (tools/setup.sh --full builds it): the kube images tools/versions.env pins"
  for kube in "${MK_KUBE_VERSIONS[@]}"; do
    if [[ -x "${kubeadm}" ]]; then
      # With the version given kubeadm looks nothing up; unshare -rn makes sure.
      refs+="$(unshare -rn "${kubeadm}" config images list --kubernetes-version "${kube}" \
        --image-repository registry.k8s.io 2>"${MK_OUT}/logs/kubeadm.log")"$'\n' ||
        mk_die "kubeadm config images list failed (${MK_OUT}/logs/kubeadm.log)"
    else
      refs+="$(kit_kube_image_refs "${kube}")"$'\n'
    fi
  done
  kit_manifest flannel
  [[ -f "${MANIFEST_FILE}" ]] || mk_die "no ${MANIFEST_FILE}: run the manifests step first"
  flannel="$(kit_manifest_images "${MANIFEST_FILE}")"
  refs+="${flannel}"$'\n'
  refs+="registry.k8s.io/metrics-server/metrics-server:${MIRROR_METRICS_SERVER_VERSION}"$'\n'
  refs+="docker.io/rancher/local-path-provisioner:${MIRROR_LOCAL_PATH_VERSION}"$'\n'
  refs+="ghcr.io/headlamp-k8s/headlamp:${MIRROR_HEADLAMP_VERSION}"
  while read -r ref; do
    case "${ref}" in
      registry.k8s.io/*) upstream="${IMAGES_UPSTREAM}" ;;
      ghcr.io/flannel-io/*) upstream="${FLANNEL_IMAGES_UPSTREAM}" ;;
      docker.io/rancher/local-path-provisioner:*) upstream="${LOCAL_PATH_IMAGES_UPSTREAM}" ;;
      ghcr.io/headlamp-k8s/*) upstream="${HEADLAMP_IMAGES_UPSTREAM}" ;;
      *) mk_die "no upstream for ${ref}" ;;
    esac
    path="${ref#*/}"
    # A mirror (any imageRepository but registry.k8s.io) is asked for
    # <repository>/coredns:<tag> by kubeadm, for <repository>/metrics-server:<tag> by the program.
    case "${path}" in
      coredns/coredns:* | metrics-server/metrics-server:*) alias="${path#*/}" ;;
      *) alias=- ;;
    esac
    printf '%s/%s %s %s\n' "${upstream}" "${path}" "${path}" "${alias}"
  done < <(LC_ALL=C sort -u <<<"${refs}")
}

# stored_digest PATH:TAG: the manifest digest the registry storage has for the tag.
stored_digest() { cat "$(kit_tag_link "$1")" 2>/dev/null || true; }

# holds DIGEST PATH:TAG ALIAS: the storage has DIGEST under the tag and the alias (unless -).
holds() { [[ "$(stored_digest "$2")" == "$1" && ("$3" == - || "$(stored_digest "$3")" == "$1") ]]; }

# crane trusting SSL_CERT_FILE (default: the system's CA bundle) for the upstreams and the kit CA.
fill_crane() { SSL_CERT_FILE="${STATE}/ca-bundle.crt" nice -n 10 "${MK_OUT}/bin/crane" "$@"; }

step_images() {
  local src path alias digest host="" replaced=0 plan
  local -a todo=()
  kit_build_tools registry crane
  kit_ensure_ca
  mkdir -p "${STATE}" "${MK_OUT}/logs"
  cat "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "${MK_OUT}/pki/ca.crt" >"${STATE}/ca-bundle.crt"
  plan="$(image_plan)"
  while read -r src path alias; do
    digest="$(fill_crane digest --platform linux/amd64 "${src}")" || mk_die "crane digest ${src} failed"
    if holds "${digest}" "${path}" "${alias}"; then
      mk_log "image ${path}: up to date (${digest})"
    else
      todo+=("${src} ${path} ${alias} ${digest}")
    fi
  done <<<"${plan}"
  ((${#todo[@]})) || return 0
  local port
  port="$(kit_free_port)"
  host="127.0.0.1:${port}"
  kit_registry_start 127.0.0.1 "${port}" "${FILL_REGISTRY}"
  local entry
  for entry in "${todo[@]}"; do
    read -r src path alias digest <<<"${entry}"
    [[ -z "$(stored_digest "${path}")" ]] || replaced=1
    fill_crane copy --platform linux/amd64 "${src}" "${host}/${path}" 2>>"${MK_OUT}/logs/crane.log" ||
      mk_die "crane copy ${src} failed (${MK_OUT}/logs/crane.log)"
    [[ "$(stored_digest "${path}")" == "${digest}" ]] ||
      mk_die "${src} changed while it was copied (${digest}, now $(stored_digest "${path}")): run again"
    if [[ "${alias}" != - ]]; then
      fill_crane copy "${host}/${path}" "${host}/${alias}" 2>>"${MK_OUT}/logs/crane.log"
      mk_log "image ${alias}: same image as ${path}"
    fi
    mk_log "image ${path}: copied from ${src} (${digest})"
  done
  kit_stop "${FILL_REGISTRY}"
  if ((replaced)); then
    # A tag that moved left its old image behind untagged: drop it.
    OTEL_TRACES_EXPORTER=none "${MK_OUT}/bin/registry" garbage-collect --delete-untagged \
      "${MK_OUT}/run/${FILL_REGISTRY}.yml" >"${MK_OUT}/logs/registry-gc.log" 2>&1
  fi
  mk_log "registry storage: $(du -sh "${MK_OUT}/registry" | cut -f1)"
}

# ---------------------------------------------------------------------------
# The Debian packages: build-os-mirror.sh fetches them from Debian's archive
# (it reads the Depends of the .debs just published, so it comes last).
step_os_mirror() {
  local -a args=(--out "${MK_OUT}")
  if ((MK_FORCE)); then args+=(--force); fi
  "${KIT_DIR}/build-os-mirror.sh" "${args[@]}"
}

main() {
  local step start=${SECONDS}
  local -a wanted=("${WANTED[@]}")
  ((${#wanted[@]})) || wanted=("${STEPS[@]}")
  mkdir -p "${MK_OUT}/run" "${STATE}"
  exec 9>"${MK_OUT}/run/fill-from-upstream.lock"
  flock -n 9 || mk_die "another fill-from-upstream.sh works on ${MK_OUT}"
  trap 'kit_stop "${FILL_REGISTRY}" 2>/dev/null || true' EXIT
  mk_log "mirror directory ${MK_OUT}"
  mk_log "upstreams: kube packages ${KUBE_UPSTREAM}, containerd.io ${DOCKER_UPSTREAM},"
  mk_log "  images ${IMAGES_UPSTREAM}, ${FLANNEL_IMAGES_UPSTREAM}, ${LOCAL_PATH_IMAGES_UPSTREAM} and ${HEADLAMP_IMAGES_UPSTREAM},"
  mk_log "  manifests ${FLANNEL_UPSTREAM}, ${METRICS_SERVER_UPSTREAM} and ${LOCAL_PATH_UPSTREAM}"
  for step in "${STEPS[@]}"; do
    if [[ " ${wanted[*]} " == *" ${step} "* ]]; then
      mk_step "upstream: ${step}" "step_${step//-/_}"
    fi
  done
  mk_log "done in $((SECONDS - start))s; serve it with tools/mirror-kit/serve.sh ADDRESS --out ${MK_OUT}"
}

main
