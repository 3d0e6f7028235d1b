#!/usr/bin/env bash
# Build, from source on this machine, every container image a cluster node
# pulls, and push them into the mirror's registry storage:
#
#   registry.k8s.io paths  kube-apiserver, kube-controller-manager, kube-scheduler,
#                          kube-proxy (MIRROR_KUBE_VERSION and, for upgrade tests, each
#                          MIRROR_KUBE_UPGRADE_FROM), etcd, coredns/coredns, pause,
#                          metrics-server/metrics-server
#   ghcr.io paths          flannel-io/flannel, flannel-io/flannel-cni-plugin
#   docker.io paths        rancher/local-path-provisioner
#
# and copy the pinned manifests to www/ (kube-flannel.yml; metrics-server's
# release components.yaml, made with the kubectl build-debs.sh builds;
# local-path-storage.yaml). Output, in the mirror directory (default
# .cache/mirror, git-ignored):
#
#   registry/        the registry's storage (serve it with tools/mirror-kit/serve.sh)
#   www/flannel/, www/metrics-server/, www/local-path-provisioner/
#                    the manifests, one directory per pinned version
#   pki/             the kit CA (ca.crt, ca.key), made once; server certificates
#   bin/             kit tools: registry, crane, ctr
#   build/images/    binaries, Debian packages and layer tarballs (intermediate)
#   stamps/, logs/   stamps keyed by versions (one per kube version); times.log, images.tsv
#
# Every binary is built from its Go module (C for pause); the userspace tools
# the kube-proxy, flannel and local-path-provisioner images need (iptables,
# nft, conntrack; busybox's cp, and sh for the provisioner's helper pod) come
# from Debian packages (apt-get download + dpkg-deb -x). Images are assembled
# with crane, without Docker, and pushed to a registry started on
# 127.0.0.1:<free port> for the duration of the push.
#
# Usage: tools/mirror-kit/build-images.sh [--out DIR] [--force] [STEP...]
#   A second run with nothing changed does nothing. --force ignores the stamps.
#   STEP: run only these (in the order of STEPS below); images needs the others.
#   Versions: tools/versions.env, section "mirror kit: images".
set -euo pipefail

MK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$(cd "${MK_DIR}/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${MK_DIR}/lib.sh"
# shellcheck source=SCRIPTDIR/images/serving.sh
source "${MK_DIR}/images/serving.sh"
# shellcheck source=SCRIPTDIR/../versions.env
source "${TOOLS_DIR}/versions.env"
# kube_wrapper_module, kube_go_build, module_info (they log through `log`).
# shellcheck source=SCRIPTDIR/../toolchain/kube-tools.sh
source "${TOOLS_DIR}/toolchain/kube-tools.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
mk_init build-images "$@"
log() { mk_log "$@"; }
# One build at a time per mirror directory (the tests run this script too).
mkdir -p "${MK_OUT}/run"
exec 9>"${MK_OUT}/run/build-images.lock"
if ! flock -n 9; then
  mk_log "another build-images.sh works on ${MK_OUT}: waiting for it"
  flock 9
fi

WORK="${MK_BUILD}/images"
BIN="${MK_OUT}/bin"
KUBEADM_BIN="${MK_ROOT}/.toolchain/bin/kubeadm"

# Go: module-aware, never switch toolchains, no VCS stamping; one package at a
# time and niced (2 shared cores), as tools/toolchain/kube-tools.sh builds.
export GO111MODULE=on GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off
KUBE_TOOLS_NICE=10
KUBE_TOOLS_GO_P=1
GO_VERSION=""

# The environment every image gets (the distroless default).
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Debian packages of the layers that carry userspace tools.
NETFILTER_PACKAGES=(iptables nftables conntrack)
BUSYBOX_PACKAGE=busybox-static
CERTS_PACKAGE=ca-certificates
# Set by step_flannel_manifest from the pinned kube-flannel.yml.
FLANNEL_CNI_TAG=""

# The images, by name; a kube command's image is COMMAND@VERSION, one per kit
# version (set in main, after mk_kube_versions).
IMAGES=()
SHARED_IMAGES=(etcd coredns pause flannel flannel-cni-plugin metrics-server local-path-provisioner)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
# The Debian packages this script runs: openssl (CA), curl (readiness),
# binutils (readelf, strip), gcc and libc6-dev (pause, flanneld's cgo),
# libcap2-bin (setcap), apt (apt-get download), python3.
step_deps() {
  mk_require_debs openssl curl binutils gcc libc6-dev libcap2-bin python3 coreutils tar
  command -v go >/dev/null || mk_die "go not found on PATH (need >= ${GO_MIN_VERSION})"
}

# Stamps of this script: <out>/stamps/images-NAME.
stamp_ok() { mk_stamp_ok "images-$1" "${@:2}"; }
stamp_write() { mk_stamp_write "images-$1" "$2"; }

# The kit's own sources: changing them rebuilds the layers and images.
kit_src_hash() { mk_hash "${MK_DIR}/build-images.sh" "${MK_DIR}/images"; }

# static_elf FILE: FILE is an ELF executable without a dynamic section.
static_elf() {
  if readelf -d "$1" 2>/dev/null | grep -q 'NEEDED'; then
    mk_die "$1 is dynamically linked"
  fi
}

# ---------------------------------------------------------------------------
# step: kit tools (registry, crane, ctr; images/serving.sh builds them)
# ---------------------------------------------------------------------------
step_tools() { kit_build_tools registry crane ctr; }

# ---------------------------------------------------------------------------
# steps: the binaries of the images
# ---------------------------------------------------------------------------
# kube_dir VERSION / kube_key VERSION: where the kube binaries of VERSION go, what they are made of.
kube_dir() { printf '%s\n' "${WORK}/bin/kube-$1"; }
kube_key() { printf 'kubernetes=%s %s\n' "$1" "${GO_VERSION}"; }

step_kube() {
  local version
  for version in "${MK_KUBE_VERSIONS[@]}"; do
    mk_step "images: kube ${version}" kube_binaries "${version}"
  done
}

# kube_binaries VERSION: the kube commands of the images, at VERSION.
kube_binaries() {
  local version="$1" dir c key
  dir="$(kube_dir "${version}")"
  key="$(kube_key "${version}")"
  local -a bins=() pkgs=()
  for c in "${KIT_KUBE_CMDS[@]}"; do
    bins+=("${dir}/${c}")
    pkgs+=("k8s.io/kubernetes/cmd/${c}")
  done
  if stamp_ok "kube-${version}" "${key}" "${bins[@]}"; then
    mk_log "kube binaries ${version}: up to date"
    return 0
  fi
  mk_log "building ${KIT_KUBE_CMDS[*]} ${version} (one go build, shared cache)"
  local src="${WORK}/src/kube-${version}"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  kube_wrapper_module "${src}" "${version}" kube-images-build "${pkgs[@]}"
  kube_go_build "${src}" "${version}" "${dir}/" "${pkgs[@]}"
  for c in "${KIT_KUBE_CMDS[@]}"; do
    static_elf "${dir}/${c}"
    [[ "$("${dir}/${c}" --version)" == "Kubernetes ${version}" ]] \
      || mk_die "${c} --version printed '$("${dir}/${c}" --version)'"
  done
  stamp_write "kube-${version}" "${key}"
}

ETCD_CMDS=(etcd etcdctl etcdutl)
etcd_dir() { printf '%s\n' "${WORK}/bin/etcd-${MIRROR_ETCD_VERSION}"; }
etcd_key() { printf 'etcd=%s %s\n' "${MIRROR_ETCD_VERSION}" "${GO_VERSION}"; }

step_etcd() {
  local dir key v="${MIRROR_ETCD_VERSION}" c
  dir="$(etcd_dir)"
  key="$(etcd_key)"
  if stamp_ok etcd "${key}" "${dir}/etcd" "${dir}/etcdctl" "${dir}/etcdutl"; then
    mk_log "etcd ${v}: up to date"
    return 0
  fi
  mk_log "building etcd, etcdctl, etcdutl ${v}"
  # server/v3's go.mod replaces its sibling modules (../api, ../pkg, ...) by
  # directories, so `go install @version` refuses it: a wrapper module
  # requires the three main modules at the same version instead.
  local src="${WORK}/src/etcd-${v}"
  rm -rf "${src}" "${dir}"
  mkdir -p "${src}" "${dir}"
  printf 'module kvm-kubeadm.invalid/mirror-kit/etcd\n\ngo 1.24.0\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 %s\n\tgo.etcd.io/etcd/etcdctl/v3 %s\n\tgo.etcd.io/etcd/etcdutl/v3 %s\n)\n' \
    "${v}" "${v}" "${v}" >"${src}/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n\t_ "go.etcd.io/etcd/etcdutl/v3"\n\t_ "go.etcd.io/etcd/server/v3"\n)\n' >"${src}/tools.go"
  (
    cd "${src}" || exit 1
    go mod tidy
    for c in "${ETCD_CMDS[@]}"; do
      local pkg="go.etcd.io/etcd/${c}/v3"
      if [[ "${c}" == etcd ]]; then pkg=go.etcd.io/etcd/server/v3; fi
      CGO_ENABLED=0 nice -n 10 go build -p 1 -trimpath -ldflags "-s -w" -o "${dir}/${c}" "${pkg}"
    done
  )
  static_elf "${dir}/etcd"
  "${dir}/etcd" --version | grep -x "etcd Version: ${v#v}" >/dev/null || mk_die "etcd --version: $("${dir}/etcd" --version)"
  stamp_write etcd "${key}"
}

# binary_dir NAME VERSION / binary_key NAME VERSION: where go_binary puts
# NAME at VERSION, what it is made of.
binary_dir() { printf '%s/bin/%s-%s\n' "${WORK}" "$1" "$2"; }
binary_key() { printf '%s=%s %s\n' "$1" "$2" "${GO_VERSION}"; }

# go_binary NAME VERSION PKG@VERSION LDFLAGS FLAG WANT: binary_dir's NAME, built
# as released (kit_go_install: CGO_ENABLED=0, the module's own go.mod) unless
# stamped; it must be static and print the line WANT for `NAME FLAG`.
go_binary() {
  local name="$1" version="$2" target="$3" ldflags="$4" flag="$5" want="$6" dir key
  dir="$(binary_dir "${name}" "${version}")"
  key="$(binary_key "${name}" "${version}")"
  if stamp_ok "${name}" "${key}" "${dir}/${name}"; then
    mk_log "${name} ${version}: up to date"
    return 0
  fi
  mk_log "building ${name} ${version} (${target})"
  rm -rf "${dir}"
  kit_go_install "${dir}" "${target}" "${ldflags}"
  static_elf "${dir}/${name}"
  "${dir}/${name}" "${flag}" 2>&1 | grep -xF "${want}" >/dev/null \
    || mk_die "${name} ${flag}: $("${dir}/${name}" "${flag}" 2>&1)"
  stamp_write "${name}" "${key}"
}

# The ldflags of each as its own build sets them (Makefile, scripts/build); a
# module zip carries no commit, so only the version is set.
step_coredns() {
  go_binary coredns "${MIRROR_COREDNS_VERSION}" "github.com/coredns/coredns@${MIRROR_COREDNS_VERSION}" \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${MIRROR_COREDNS_VERSION}" \
    -version "CoreDNS-${MIRROR_COREDNS_VERSION#v}"
}

step_metrics_server() {
  go_binary metrics-server "${MIRROR_METRICS_SERVER_VERSION}" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@${MIRROR_METRICS_SERVER_VERSION}" \
    "-w -X k8s.io/client-go/pkg/version.gitVersion=${MIRROR_METRICS_SERVER_VERSION}" \
    --version "${MIRROR_METRICS_SERVER_VERSION}"
}

step_local_path_provisioner() {
  go_binary local-path-provisioner "${MIRROR_LOCAL_PATH_VERSION}" \
    "github.com/rancher/local-path-provisioner@${MIRROR_LOCAL_PATH_VERSION}" \
    "-s -w -X main.VERSION=${MIRROR_LOCAL_PATH_VERSION}" \
    --version "local-path-provisioner version ${MIRROR_LOCAL_PATH_VERSION}"
}

pause_key() { printf 'pause=%s kubernetes=%s gcc=%s\n' "${MIRROR_PAUSE_VERSION}" "${MIRROR_KUBE_VERSION}" "$(gcc -dumpfullversion)"; }

step_pause() {
  local dir="${WORK}/bin/pause-${MIRROR_PAUSE_VERSION}" key src
  key="$(pause_key)"
  if stamp_ok pause "${key}" "${dir}/pause"; then
    mk_log "pause ${MIRROR_PAUSE_VERSION}: up to date"
    return 0
  fi
  src="$(module_info "k8s.io/kubernetes@${MIRROR_KUBE_VERSION}" Dir)/build/pause/linux/pause.c"
  [[ -f "${src}" ]] || mk_die "no ${src} in the k8s.io/kubernetes module zip"
  grep -q "^TAG ?= ${MIRROR_PAUSE_VERSION}$" "$(dirname "${src}")/../Makefile" \
    || mk_die "build/pause/Makefile of k8s.io/kubernetes@${MIRROR_KUBE_VERSION} is not pause ${MIRROR_PAUSE_VERSION}"
  mk_log "building pause ${MIRROR_PAUSE_VERSION} from ${src}"
  mkdir -p "${dir}"
  # CFLAGS of build/pause/Makefile; VERSION is v<TAG>-<rev>, rev = the module version.
  gcc -Os -Wall -Werror -static "-DVERSION=v${MIRROR_PAUSE_VERSION}-${MIRROR_KUBE_VERSION}" -o "${dir}/pause.tmp" "${src}"
  strip "${dir}/pause.tmp"
  mv -f "${dir}/pause.tmp" "${dir}/pause"
  static_elf "${dir}/pause"
  "${dir}/pause" -v | grep "v${MIRROR_PAUSE_VERSION}" >/dev/null || mk_die "pause -v: $("${dir}/pause" -v)"
  stamp_write pause "${key}"
}

flannel_key() { printf 'flannel=%s %s gcc=%s\n' "${MIRROR_FLANNEL_VERSION}" "${GO_VERSION}" "$(gcc -dumpfullversion)"; }

step_flanneld() {
  local dir="${WORK}/bin/flannel-${MIRROR_FLANNEL_VERSION}" key
  key="$(flannel_key)"
  if stamp_ok flanneld "${key}" "${dir}/flanneld"; then
    mk_log "flanneld ${MIRROR_FLANNEL_VERSION}: up to date"
    return 0
  fi
  mk_log "building flanneld ${MIRROR_FLANNEL_VERSION}"
  rm -rf "${dir}"
  # As its Makefile on amd64: cgo on (the UDP backend is C), linked
  # statically; netgo/osusergo keep glibc's NSS out of the static binary.
  CGO_ENABLED=1 kit_go_install "${dir}" "github.com/flannel-io/flannel@${MIRROR_FLANNEL_VERSION}" \
    "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=${MIRROR_FLANNEL_VERSION} -extldflags -static" \
    "netgo osusergo"
  mv -f "${dir}/flannel" "${dir}/flanneld"
  static_elf "${dir}/flanneld"
  [[ "$("${dir}/flanneld" --version 2>&1)" == "${MIRROR_FLANNEL_VERSION}" ]] \
    || mk_die "flanneld --version: $("${dir}/flanneld" --version 2>&1)"
  stamp_write flanneld "${key}"
}

flannel_cni_key() { printf 'cni-plugins=%s %s\n' "${MIRROR_FLANNEL_CNI_MODULE_VERSION}" "${GO_VERSION}"; }

step_flannel_cni() {
  local dir="${WORK}/bin/cni-flannel-${MIRROR_FLANNEL_CNI_MODULE_VERSION}" key
  local mod=github.com/containernetworking/plugins
  key="$(flannel_cni_key)"
  if stamp_ok flannel-cni "${key}" "${dir}/flannel"; then
    mk_log "flannel CNI plugin (${mod} ${MIRROR_FLANNEL_CNI_MODULE_VERSION}): up to date"
    return 0
  fi
  mk_log "building the flannel CNI plugin from ${mod}@${MIRROR_FLANNEL_CNI_MODULE_VERSION} plugins/meta/flannel"
  rm -rf "${dir}"
  kit_go_install "${dir}" "${mod}/plugins/meta/flannel@${MIRROR_FLANNEL_CNI_MODULE_VERSION}" \
    "-s -w -X ${mod}/pkg/utils/buildversion.BuildVersion=${MIRROR_FLANNEL_CNI_MODULE_VERSION}"
  static_elf "${dir}/flannel"
  CNI_COMMAND=VERSION "${dir}/flannel" </dev/null | grep cniVersion >/dev/null || mk_die "flannel CNI_COMMAND=VERSION failed"
  stamp_write flannel-cni "${key}"
}

wrapper_key() { printf 'src=%s %s\n' "$(mk_hash "${MK_DIR}/images/iptables-wrapper")" "${GO_VERSION}"; }

step_iptables_wrapper() {
  local dir="${WORK}/bin/iptables-wrapper" key src="${WORK}/src/iptables-wrapper"
  key="$(wrapper_key)"
  if stamp_ok iptables-wrapper "${key}" "${dir}/iptables-wrapper"; then
    mk_log "iptables-wrapper: up to date"
    return 0
  fi
  mk_log "building iptables-wrapper (tools/mirror-kit/images/iptables-wrapper)"
  rm -rf "${src}"
  mkdir -p "${src}" "${dir}"
  cp "${MK_DIR}/images/iptables-wrapper/main.go" "${src}/"
  printf 'module kvm-kubeadm.invalid/mirror-kit/iptables-wrapper\n\ngo 1.24\n' >"${src}/go.mod"
  (cd "${src}" && CGO_ENABLED=0 nice -n 10 go build -p 1 -trimpath -ldflags "-s -w" -o "${dir}/iptables-wrapper" .)
  static_elf "${dir}/iptables-wrapper"
  stamp_write iptables-wrapper "${key}"
}

# ---------------------------------------------------------------------------
# step: Debian packages of the userspace layers
# ---------------------------------------------------------------------------
# deb_closure PKG...: PKG and everything it depends on (no recommends).
deb_closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" | grep -v '^[ <]' | sort -u
}

# debs_key: name=candidate-version of every package the layers take.
debs_key() {
  local p v
  local -a pkgs=()
  # The CA bundle's package only for its data files: not its dependencies.
  mapfile -t pkgs < <(deb_closure "${NETFILTER_PACKAGES[@]}" "${BUSYBOX_PACKAGE}"; printf '%s\n' "${CERTS_PACKAGE}")
  # One apt-cache call: "pkg:" lines, each followed by its "Candidate:".
  apt-cache policy "${pkgs[@]}" | awk '
    /^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) }
    $1 == "Candidate:" { print p "=" $2 }' | sort >"${WORK}/debs.key"
  for p in "${pkgs[@]}"; do
    v="$(sed -n "s/^${p}=//p" "${WORK}/debs.key")"
    [[ -n "${v}" && "${v}" != "(none)" ]] || mk_die "no candidate for Debian package ${p} (apt-get update?)"
  done
  cat "${WORK}/debs.key"
}

DEBROOT="${WORK}/debroot"

step_debs() {
  local key
  key="$(debs_key)"
  if stamp_ok debs "${key}" "${DEBROOT}"; then
    mk_log "Debian packages: up to date"
    return 0
  fi
  local dir="${WORK}/debs" deb
  rm -rf "${dir}" "${DEBROOT}"
  mkdir -p "${dir}" "${DEBROOT}"
  local -a pkgs=()
  mapfile -t pkgs <<<"${key}"
  mk_log "apt-get download ${pkgs[*]}"
  # As root into a directory _apt may not reach: download as root, quietly.
  (cd "${dir}" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}")
  for deb in "${dir}"/*.deb; do
    dpkg-deb -x "${deb}" "${DEBROOT}"
  done
  stamp_write debs "${key}"
}

# ---------------------------------------------------------------------------
# steps: the pinned manifests (images/serving.sh kit_manifest: where, which images)
# ---------------------------------------------------------------------------
# module_dir MODULE@VERSION: the module's directory in Go's module cache.
module_dir() {
  local dir
  dir="$(module_info "$1" Dir)"
  [[ -d "${dir}" ]] || mk_die "no module directory for $1"
  printf '%s\n' "${dir}"
}

step_flannel_manifest() {
  local module="github.com/flannel-io/flannel@${MIRROR_FLANNEL_VERSION}" dir
  dir="$(module_dir "${module}")"
  kit_pin_manifest flannel "${dir}/Documentation/kube-flannel.yml" "${module}"
  FLANNEL_CNI_TAG="$(kit_manifest_images "${MANIFEST_FILE}" | sed -n 's|^ghcr.io/flannel-io/flannel-cni-plugin:||p')"
}

step_addon_manifests() {
  local kubectl="${MK_BUILD}/kubernetes-${MIRROR_KUBE_VERSION}/bin/kubectl" dir module
  [[ -x "${kubectl}" ]] || mk_die "no ${kubectl}: run tools/mirror-kit/build-debs.sh first (its kubectl renders metrics-server's manifest)"
  module="sigs.k8s.io/metrics-server@${MIRROR_METRICS_SERVER_VERSION}"
  dir="$(module_dir "${module}")"
  # What its Makefile's release-manifests publishes as components.yaml; offline
  # (unshare -rn: nothing to reach).
  unshare -rn "${kubectl}" kustomize "${dir}/manifests/overlays/release" >"${WORK}/components.yaml"
  kit_pin_manifest metrics-server "${WORK}/components.yaml" "kubectl kustomize manifests/overlays/release of ${module}"
  module="github.com/rancher/local-path-provisioner@${MIRROR_LOCAL_PATH_VERSION}"
  dir="$(module_dir "${module}")"
  kit_pin_manifest local-path "${dir}/deploy/local-path-storage.yaml" "${module}"
}

# ---------------------------------------------------------------------------
# step: the kube image list against kubeadm's own
# ---------------------------------------------------------------------------
# Each kit version against the list of its own kubeadm (etcd, coredns and pause
# are the kit's one build of each, so every version must name the same tags):
# the one build-debs.sh built for its package, else the toolchain's of that version.
step_check_kubeadm_list() {
  local version kubeadm want got
  for version in "${MK_KUBE_VERSIONS[@]}"; do
    kubeadm="${MK_BUILD}/kubernetes-${version}/bin/kubeadm"
    if [[ ! -x "${kubeadm}" && -x "${KUBEADM_BIN}" && "$("${KUBEADM_BIN}" version -o short)" == "${version}" ]]; then
      kubeadm="${KUBEADM_BIN}"
    fi
    if [[ ! -x "${kubeadm}" ]]; then
      mk_log "no kubeadm ${version} (tools/mirror-kit/build-debs.sh or tools/setup.sh --full builds one): its image list not cross-checked"
      continue
    fi
    want="$(kit_kube_image_refs "${version}" | sort)"
    # Offline: with the version given, kubeadm never looks it up; unshare -rn
    # makes sure nothing leaves the machine.
    got="$(unshare -rn "${kubeadm}" config images list --kubernetes-version "${version}" \
      --image-repository registry.k8s.io 2>/dev/null | sort)"
    [[ "${got}" == "${want}" ]] || mk_die "kubeadm ${version} (${kubeadm}) lists"$'\n'"${got}"$'\n'"but tools/versions.env pins"$'\n'"${want}"
    mk_log "kubeadm ${version}'s image list matches the pinned versions ($(wc -l <<<"${got}") images)"
  done
}

# ---------------------------------------------------------------------------
# layers: a staging directory each, then a reproducible tarball
# ---------------------------------------------------------------------------
# copy_from_root ROOT STAGE PATH: copy ROOT/PATH to STAGE/PATH, keeping
# symbolic links, and follow each link to copy its target too.
copy_from_root() {
  local root="$1" stage="$2" rel="${3#/}" target
  [[ -e "${stage}/${rel}" || -L "${stage}/${rel}" ]] && return 0
  [[ -e "${root}/${rel}" || -L "${root}/${rel}" ]] || mk_die "${rel} is not in ${root}"
  mkdir -p "$(dirname "${stage}/${rel}")"
  cp -a "${root}/${rel}" "${stage}/${rel}"
  if [[ -L "${root}/${rel}" ]]; then
    target="$(readlink "${root}/${rel}")"
    [[ "${target}" == /* ]] || target="$(dirname "/${rel}")/${target}"
    copy_from_root "${root}" "${stage}" "$(realpath -m -s "${target}")"
  fi
}

# elf_deps ROOT STAGE PATH...: copy each PATH from ROOT and, transitively, the
# shared libraries (DT_NEEDED) and program interpreter it needs.
elf_deps() {
  local root="$1" stage="$2" rel lib dir found
  shift 2
  local -a queue=("$@")
  local -A seen=()
  while ((${#queue[@]})); do
    rel="${queue[0]#/}"
    queue=("${queue[@]:1}")
    [[ -z "${seen[${rel}]:-}" ]] || continue
    seen[${rel}]=1
    copy_from_root "${root}" "${stage}" "${rel}"
    rel="$(realpath -m -s --relative-to="${root}" "$(readlink -f "${root}/${rel}")")"
    seen[${rel}]=1
    lib="$(readelf -l "${root}/${rel}" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
    if [[ -n "${lib}" ]]; then queue+=("${lib}"); fi
    while read -r lib; do
      found=""
      for dir in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 usr/lib; do
        if [[ -e "${root}/${dir}/${lib}" ]]; then
          found="${dir}/${lib}"
          break
        fi
      done
      [[ -n "${found}" ]] || mk_die "${rel} needs ${lib}, which no extracted Debian package holds"
      queue+=("${found}")
    done < <(readelf -d "${root}/${rel}" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
}

stage_netfilter() {
  local stage="$1" r="${DEBROOT}" c
  local -a roots=(usr/sbin/xtables-nft-multi usr/sbin/xtables-legacy-multi usr/sbin/nft usr/sbin/conntrack)
  for c in "${r}"/usr/lib/x86_64-linux-gnu/xtables/*.so; do roots+=("${c#"${r}"/}"); done
  elf_deps "${r}" "${stage}" "${roots[@]}"
  # The backend-specific names (iptables-nft, ip6tables-legacy-save, ...) as
  # the package has them (links to the multi binaries).
  for c in "${r}"/usr/sbin/ip{,6}tables-{nft,legacy}{,-save,-restore}; do
    copy_from_root "${r}" "${stage}" "${c#"${r}"/}"
  done
  # iptables, ip6tables and their -save/-restore: the wrapper picks the host's backend.
  install -m 0755 "${WORK}/bin/iptables-wrapper/iptables-wrapper" "${stage}/usr/sbin/iptables-wrapper"
  for c in ip{,6}tables{,-save,-restore}; do
    ln -sfn iptables-wrapper "${stage}/usr/sbin/${c}"
  done
  # Protocol names (-p tcp, meta l4proto) through glibc's getprotobyname.
  copy_from_root "${r}" "${stage}" etc/protocols
  if [[ ${EUID} -eq 0 ]]; then
    chroot "${stage}" /usr/sbin/xtables-nft-multi iptables --version >/dev/null
    chroot "${stage}" /usr/sbin/xtables-legacy-multi iptables --version >/dev/null
    chroot "${stage}" /usr/sbin/nft --version >/dev/null
    chroot "${stage}" /usr/sbin/conntrack --version >/dev/null
  fi
}

# stage_busybox STAGE APPLET...: Debian's static busybox as /bin/busybox, and
# /bin/APPLET for each applet.
stage_busybox() {
  local stage="$1" applet
  shift
  copy_from_root "${DEBROOT}" "${stage}" bin/busybox
  static_elf "${stage}/bin/busybox"
  for applet in "$@"; do ln -s busybox "${stage}/bin/${applet}"; done
}

stage_coredns() {
  local stage="$1" f
  install -D -m 0755 "$(binary_dir coredns "${MIRROR_COREDNS_VERSION}")/coredns" "${stage}/coredns"
  # As coredns' Dockerfile: it runs as 65532 and binds port 53.
  setcap cap_net_bind_service=+ep "${stage}/coredns"
  # The CA bundle update-ca-certificates makes from the package's default set.
  mkdir -p "${stage}/etc/ssl/certs"
  for f in "${DEBROOT}"/usr/share/ca-certificates/mozilla/*.crt; do
    cat "${f}"
  done >"${stage}/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "${stage}/etc/ssl/certs/ca-certificates.crt"
}

# stage_layer NAME DIR: fill DIR with layer NAME's files.
stage_layer() {
  local name="$1" stage="$2" c
  case "${name}" in
    kube-apiserver@* | kube-controller-manager@* | kube-scheduler@* | kube-proxy@*)
      install -D -m 0755 "$(kube_dir "${name#*@}")/${name%@*}" "${stage}/usr/local/bin/${name%@*}"
      ;;
    etcd)
      for c in "${ETCD_CMDS[@]}"; do install -D -m 0755 "$(etcd_dir)/${c}" "${stage}/usr/local/bin/${c}"; done
      ;;
    coredns) stage_coredns "${stage}" ;;
    pause) install -D -m 0755 "${WORK}/bin/pause-${MIRROR_PAUSE_VERSION}/pause" "${stage}/pause" ;;
    flanneld) install -D -m 0755 "${WORK}/bin/flannel-${MIRROR_FLANNEL_VERSION}/flanneld" "${stage}/opt/bin/flanneld" ;;
    flannel-cni) install -D -m 0755 "${WORK}/bin/cni-flannel-${MIRROR_FLANNEL_CNI_MODULE_VERSION}/flannel" "${stage}/flannel" ;;
    metrics-server)
      install -D -m 0755 "$(binary_dir metrics-server "${MIRROR_METRICS_SERVER_VERSION}")/metrics-server" "${stage}/metrics-server"
      ;;
    local-path-provisioner)
      install -D -m 0755 "$(binary_dir local-path-provisioner "${MIRROR_LOCAL_PATH_VERSION}")/local-path-provisioner" \
        "${stage}/usr/bin/local-path-provisioner"
      ;;
    netfilter) stage_netfilter "${stage}" ;;
    cp) stage_busybox "${stage}" cp ;;
    # The provisioner's helper pod runs /bin/sh /script/setup (or teardown),
    # scripts that make or remove a volume's directory.
    shell) stage_busybox "${stage}" sh mkdir rm chmod ;;
    *) mk_die "unknown layer ${name}" ;;
  esac
}

# layer_key NAME: what the layer is made of.
layer_key() {
  local src
  src="$(kit_src_hash)"
  case "$1" in
    kube-*@*) printf 'src=%s %s\n' "${src}" "$(kube_key "${1#*@}")" ;;
    etcd) printf 'src=%s %s\n' "${src}" "$(etcd_key)" ;;
    coredns)
      printf 'src=%s %s %s\n' "${src}" "$(binary_key coredns "${MIRROR_COREDNS_VERSION}")" \
        "$(grep "^${CERTS_PACKAGE}=" "${MK_STAMPS}/images-debs")"
      ;;
    pause) printf 'src=%s %s\n' "${src}" "$(pause_key)" ;;
    flanneld) printf 'src=%s %s\n' "${src}" "$(flannel_key)" ;;
    flannel-cni) printf 'src=%s %s\n' "${src}" "$(flannel_cni_key)" ;;
    metrics-server) printf 'src=%s %s\n' "${src}" "$(binary_key metrics-server "${MIRROR_METRICS_SERVER_VERSION}")" ;;
    local-path-provisioner) printf 'src=%s %s\n' "${src}" "$(binary_key local-path-provisioner "${MIRROR_LOCAL_PATH_VERSION}")" ;;
    netfilter) printf 'src=%s debs=%s %s\n' "${src}" "$(mk_hash "${MK_STAMPS}/images-debs")" "$(wrapper_key)" ;;
    cp | shell) printf 'src=%s debs=%s\n' "${src}" "$(mk_hash "${MK_STAMPS}/images-debs")" ;;
  esac
}

# layer_tar NAME: ${WORK}/layers/NAME.tar, rebuilt when its key changed.
# Reproducible: sorted names, mtime 0, owner root, no atime/ctime; file
# capabilities (coredns) kept as SCHILY.xattr records.
layer_tar() {
  local name="$1" key tar="${WORK}/layers/$1.tar" stage="${WORK}/stage/$1"
  key="$(layer_key "${name}")"
  if stamp_ok "layer-${name}" "${key}" "${tar}"; then
    return 0
  fi
  rm -rf "${stage}"
  mkdir -p "${stage}" "${WORK}/layers"
  stage_layer "${name}" "${stage}"
  local -a top=()
  mapfile -t top < <(cd "${stage}" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --xattrs --xattrs-include=security.capability \
    -C "${stage}" -cf "${tar}.tmp" "${top[@]}"
  mv -f "${tar}.tmp" "${tar}"
  rm -rf "${stage}"
  stamp_write "layer-${name}" "${key}"
  mk_log "layer ${name}: $(du -h "${tar}" | cut -f1) uncompressed"
}

# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------
# image_spec NAME (COMMAND@VERSION for a kube command): sets IMG_REF (repository:tag under the registry host),
# IMG_ALIASES (more references to the same image), IMG_SOURCE (module@version),
# IMG_LAYERS and IMG_CONFIG (crane mutate flags).
image_spec() {
  IMG_CONFIG=(--set-platform linux/amd64 --env "PATH=${IMAGE_PATH}")
  IMG_ALIASES=()
  case "$1" in
    kube-apiserver@* | kube-controller-manager@* | kube-scheduler@* | kube-proxy@*)
      IMG_REF="${1%@*}:${1#*@}"
      IMG_SOURCE="k8s.io/kubernetes@${1#*@}"
      IMG_LAYERS=("$1")
      if [[ "$1" == kube-proxy@* ]]; then IMG_LAYERS=(netfilter "$1"); fi
      IMG_CONFIG+=(--entrypoint "/usr/local/bin/${1%@*}")
      ;;
    etcd)
      IMG_REF="etcd:${MIRROR_ETCD_IMAGE_TAG}"
      IMG_SOURCE="go.etcd.io/etcd/server/v3@${MIRROR_ETCD_VERSION}"
      IMG_LAYERS=(etcd)
      IMG_CONFIG+=(--entrypoint /usr/local/bin/etcd)
      ;;
    coredns)
      IMG_REF="coredns/coredns:${MIRROR_COREDNS_VERSION}"
      IMG_SOURCE="github.com/coredns/coredns@${MIRROR_COREDNS_VERSION}"
      IMG_LAYERS=(coredns)
      # kubeadm asks for <imageRepository>/coredns/coredns only while
      # imageRepository is registry.k8s.io; any other repository (this
      # mirror's, or a preset's) gets <imageRepository>/coredns:<tag>.
      IMG_ALIASES=("coredns:${MIRROR_COREDNS_VERSION}")
      IMG_CONFIG+=(--entrypoint /coredns --user 65532:65532 --workdir / --exposed-ports 53/tcp --exposed-ports 53/udp)
      ;;
    pause)
      IMG_REF="pause:${MIRROR_PAUSE_VERSION}"
      IMG_SOURCE="k8s.io/kubernetes@${MIRROR_KUBE_VERSION}"
      IMG_LAYERS=(pause)
      IMG_CONFIG+=(--entrypoint /pause --user 65535:65535)
      ;;
    flannel)
      IMG_REF="flannel-io/flannel:${MIRROR_FLANNEL_VERSION}"
      IMG_SOURCE="github.com/flannel-io/flannel@${MIRROR_FLANNEL_VERSION}"
      IMG_LAYERS=(netfilter cp flanneld)
      IMG_CONFIG+=(--entrypoint /opt/bin/flanneld)
      ;;
    flannel-cni-plugin)
      [[ -n "${FLANNEL_CNI_TAG}" ]] || mk_die "flannel-cni-plugin tag unknown (step flannel-manifest)"
      IMG_REF="flannel-io/flannel-cni-plugin:${FLANNEL_CNI_TAG}"
      IMG_SOURCE="github.com/containernetworking/plugins@${MIRROR_FLANNEL_CNI_MODULE_VERSION}"
      IMG_LAYERS=(cp flannel-cni)
      ;;
    metrics-server)
      IMG_REF="metrics-server/metrics-server:${MIRROR_METRICS_SERVER_VERSION}"
      IMG_SOURCE="sigs.k8s.io/metrics-server@${MIRROR_METRICS_SERVER_VERSION}"
      IMG_LAYERS=(metrics-server)
      # The program names <imageRepository>/metrics-server:<tag> for any
      # repository but registry.k8s.io, as kubeadm does for coredns.
      IMG_ALIASES=("metrics-server:${MIRROR_METRICS_SERVER_VERSION}")
      # As its Dockerfile (distroless static).
      IMG_CONFIG+=(--entrypoint /metrics-server --user 65534)
      ;;
    local-path-provisioner)
      IMG_REF="rancher/local-path-provisioner:${MIRROR_LOCAL_PATH_VERSION}"
      IMG_SOURCE="github.com/rancher/local-path-provisioner@${MIRROR_LOCAL_PATH_VERSION}"
      # The program runs the helper pod in this image too (not an unpinned busybox).
      IMG_LAYERS=(shell local-path-provisioner)
      # As its Dockerfile (alpine): no entrypoint, the command found on PATH.
      IMG_CONFIG+=(--cmd local-path-provisioner)
      ;;
    *) mk_die "unknown image $1" ;;
  esac
  IMG_CONFIG+=(--label "org.opencontainers.image.source=${IMG_SOURCE}"
    --label "org.opencontainers.image.version=${IMG_REF##*:}")
}

# image_key: what the image of the last image_spec is made of.
image_key() {
  local l key="ref=${IMG_REF} aliases=${IMG_ALIASES[*]} config=${IMG_CONFIG[*]}"
  for l in "${IMG_LAYERS[@]}"; do key+=" ${l}:{$(layer_key "${l}")}"; done
  printf '%s\n' "${key}"
}

# registry_has REF...: the registry storage has every REF (repository:tag) tagged.
registry_has() {
  local ref
  for ref in "$@"; do
    [[ -f "$(kit_tag_link "${ref}")" ]] || return 1
  done
}

BUILD_REGISTRY=build-registry
crane() { SSL_CERT_FILE="${MK_OUT}/pki/ca.crt" "${BIN}/crane" "$@"; }

# image_size REF: "<layers> <compressed bytes>" of the pushed manifest.
image_size() {
  crane manifest "$1" | python3 -c 'import json, sys
m = json.load(sys.stdin)
print(len(m["layers"]), m["config"]["size"] + sum(l["size"] for l in m["layers"]))'
}

step_images() {
  local name l key host="" port
  local -a todo=()
  for name in "${IMAGES[@]}"; do
    image_spec "${name}"
    key="$(image_key)"
    if stamp_ok "image-${name}" "${key}" && registry_has "${IMG_REF}" "${IMG_ALIASES[@]}"; then
      mk_log "image ${IMG_REF}: up to date"
    else
      todo+=("${name}")
    fi
  done
  ((${#todo[@]})) || return 0

  port="$(kit_free_port)"
  host="127.0.0.1:${port}"
  kit_registry_start 127.0.0.1 "${port}" "${BUILD_REGISTRY}"
  mkdir -p "${MK_OUT}/logs"
  for name in "${todo[@]}"; do
    image_spec "${name}"
    local -a files=()
    for l in "${IMG_LAYERS[@]}"; do
      layer_tar "${l}"
      files+=(-f "${WORK}/layers/${l}.tar")
    done
    mk_log "image ${IMG_REF}: layers ${IMG_LAYERS[*]}"
    crane append --oci-empty-base "${files[@]}" -t "${host}/${IMG_REF}" >/dev/null 2>>"${MK_OUT}/logs/crane.log"
    crane mutate "${host}/${IMG_REF}" "${IMG_CONFIG[@]}" -t "${host}/${IMG_REF}" >/dev/null 2>>"${MK_OUT}/logs/crane.log"
    local size
    size="$(image_size "${host}/${IMG_REF}")"
    # logs/images.tsv: reference, digest, layers, compressed bytes (one line per image).
    touch "${MK_OUT}/logs/images.tsv"
    sed -i "\|^${IMG_REF}\t|d" "${MK_OUT}/logs/images.tsv"
    printf '%s\t%s\t%s\t%s\n' "${IMG_REF}" "$(crane digest "${host}/${IMG_REF}")" "${size% *}" "${size#* }" \
      >>"${MK_OUT}/logs/images.tsv"
    for l in "${IMG_ALIASES[@]}"; do
      crane copy "${host}/${IMG_REF}" "${host}/${l}" 2>>"${MK_OUT}/logs/crane.log"
      mk_log "image ${l}: same image as ${IMG_REF}"
    done
    mk_log "image ${IMG_REF}: pushed, ${size% *} layers, $(numfmt --to=iec "${size#* }") compressed"
    stamp_write "image-${name}" "$(image_key)"
  done
  kit_stop "${BUILD_REGISTRY}"
  # Each mutate left the appended image behind untagged: drop it.
  OTEL_TRACES_EXPORTER=none "${BIN}/registry" garbage-collect --delete-untagged \
    "${MK_OUT}/run/${BUILD_REGISTRY}.yml" >"${MK_OUT}/logs/registry-gc.log" 2>&1
  mk_log "registry storage: $(du -sh "${MK_OUT}/registry" | cut -f1)"
}

# ---------------------------------------------------------------------------
# In order; each is a function step_<name with _ for ->.
STEPS=(tools pki flannel-manifest addon-manifests check-kubeadm-list kube etcd coredns pause flanneld flannel-cni
  metrics-server local-path-provisioner iptables-wrapper debs images)
step_pki() { kit_ensure_ca; }

main() {
  step_deps
  GO_VERSION="$(go env GOVERSION)"
  mk_kube_versions
  local version command
  for version in "${MK_KUBE_VERSIONS[@]}"; do
    for command in "${KIT_KUBE_CMDS[@]}"; do IMAGES+=("${command}@${version}"); done
  done
  IMAGES+=("${SHARED_IMAGES[@]}")
  mkdir -p "${WORK}" "${BIN}"
  trap 'kit_stop "${BUILD_REGISTRY}" 2>/dev/null || true' EXIT
  mk_log "mirror directory ${MK_OUT}"
  local step
  local -a wanted=("${MK_ARGS[@]}")
  if ((${#wanted[@]} == 0)); then wanted=("${STEPS[@]}"); fi
  for step in "${wanted[@]}"; do
    [[ " ${STEPS[*]} " == *" ${step} "* ]] || mk_die "unknown step ${step} (steps: ${STEPS[*]})"
  done
  for step in "${STEPS[@]}"; do
    # flannel-manifest also reads the flannel-cni-plugin tag the images step needs.
    if [[ " ${wanted[*]} " == *" ${step} "* || "${step}" == flannel-manifest ]]; then
      mk_step "images: ${step}" "step_${step//-/_}"
    fi
  done
  if [[ -d "${MK_OUT}/registry" ]]; then
    mk_log "registry storage ${MK_OUT}/registry: $(du -sh "${MK_OUT}/registry" | cut -f1); serve it with tools/mirror-kit/serve.sh ADDRESS"
  fi
}

main
