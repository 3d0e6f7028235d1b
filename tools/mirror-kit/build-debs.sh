#!/usr/bin/env bash
# Build, from Go modules on this machine, the two signed apt repositories of
# the offline mirror (versions: tools/versions.env, "mirror kit: packages"):
#
#   <out>/www/kubernetes/v<MAJOR.MINOR>/deb/   pkgs.k8s.io layout (flat): Packages(.gz),
#       Release, InRelease, Release.gpg, Release.key and amd64/*.deb:
#       kubeadm, kubelet, kubectl 1.36.3-1.1 (MIRROR_KUBE_VERSION) and 1.36.2-1.1
#       (MIRROR_KUBE_UPGRADE_FROM, for upgrade tests), kubernetes-cni 1.9.1-1.1
#   <out>/www/docker/linux/debian/             download.docker.com layout: gpg (armored key),
#       dists/bookworm/{Release,InRelease,Release.gpg},
#       dists/bookworm/stable/binary-amd64/Packages(.gz),
#       dists/bookworm/pool/stable/amd64/containerd.io_2.2.9-1~debian.12~bookworm_amd64.deb
#   <out>/keys/                                the mirror's signing key (made once, reused)
#
# A node uses them as (BASE = the mirror's URL):
#   KUBE_REPO=BASE/kubernetes/v1.36/deb/   (scripts/packages.sh: Release.key, "deb [signed-by=...] $KUBE_REPO /")
#   deb [signed-by=/etc/apt/keyrings/docker.asc] BASE/docker/linux/debian bookworm stable
#                                          (key: BASE/docker/linux/debian/gpg)
#
# Usage: tools/mirror-kit/build-debs.sh [--out DIR] [--force] [STEP...]
#   --out DIR  output directory (default <repo>/.cache/mirror)
#   --force    ignore the stamps: rebuild and republish everything
#   STEP       deps, kubernetes-cni, kubernetes, containerd.io, kube-repo,
#              docker-repo (default: all of them, in that order)
# A step whose stamp (<out>/stamps/debs-*; one per Kubernetes version) matches
# its inputs does nothing; every step's duration is printed and appended to
# <out>/logs/times.log.
# Needs root only to apt-get install missing build packages (step deps).
set -euo pipefail
umask 022

KIT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${KIT_DIR}/lib.sh"
# shellcheck source=SCRIPTDIR/debs/common.sh
source "${KIT_DIR}/debs/common.sh"
# shellcheck source=SCRIPTDIR/debs/kubernetes.sh
source "${KIT_DIR}/debs/kubernetes.sh"
# shellcheck source=SCRIPTDIR/debs/containerd.sh
source "${KIT_DIR}/debs/containerd.sh"
mk_init build-debs "$@"

export GO111MODULE=on GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="-mod=mod -buildvcs=false"

mk_kube_versions
KUBE_MINOR="$(printf '%s' "${MIRROR_KUBE_VERSION#v}" | cut -d. -f1,2)"
KUBE_REPO_DIR="${MK_WWW}/kubernetes/v${KUBE_MINOR}/deb"
KUBE_POOL="${KUBE_REPO_DIR}/$(dpkg --print-architecture)"
DOCKER_ROOT="${MK_WWW}/docker/linux/${MIRROR_DOCKER_DISTRO}"
DOCKER_POOL_REL="dists/${MIRROR_DOCKER_SUITE}/pool/stable/$(dpkg --print-architecture)"
STEPS=(deps kubernetes-cni kubernetes containerd.io kube-repo docker-repo)

step_deps() {
  # apt-utils: apt-ftparchive; dpkg-dev: dpkg-shlibdeps; gcc, libc6-dev,
  # pkg-config, libseccomp-dev: runc's cgo build.
  mk_require_debs apt-utils dpkg-dev gnupg xz-utils gcc libc6-dev pkg-config libseccomp-dev
  command -v go >/dev/null || mk_die "go not found on PATH (need >= ${GO_MIN_VERSION})"
}

# build_step NAME "BUILDER [ARG...]" OUTDIR "PIN..." DEB...: run BUILDER ARG...
# OUTDIR unless the stamp of NAME holds that command, the values of the pins
# PIN... (tools/versions.env), the Go version and the hash of the kit's package
# definitions, and DEB... exist.
build_step() {
  local name="$1" outdir="$3" pin key="$2 "
  local -a builder pins
  read -r -a builder <<<"$2"
  read -r -a pins <<<"$4"
  shift 4
  for pin in "${pins[@]}"; do key+="${pin}=${!pin} "; done
  key+="go=$(go env GOVERSION) kit=$(mk_hash "${KIT_DIR}/debs" "${MK_ROOT}/tools/toolchain/kube-tools.sh" | cut -c1-16)"
  if mk_stamp_ok "debs-${name}" "${key}" "$@"; then
    mk_log "${name}: up to date"
    return 0
  fi
  "${builder[@]}" "${outdir}"
  mk_stamp_write "debs-${name}" "${key}"
}

kube_deb() { printf '%s/%s_%s-%s_%s.deb\n' "${KUBE_POOL}" "$1" "$2" "$3" "$(dpkg --print-architecture)"; }

step_kubernetes_cni() {
  build_step kubernetes-cni cni_debs "${KUBE_POOL}" \
    "MIRROR_CNI_VERSION MIRROR_CNI_DEB_REVISION MIRROR_KUBE_RELEASE_MODULE_VERSION" \
    "$(kube_deb kubernetes-cni "${MIRROR_CNI_VERSION#v}" "${MIRROR_CNI_DEB_REVISION}")"
}

# kubeadm, kubelet and kubectl of each version the kit serves, side by side in
# the one repository; a version no longer listed leaves it.
step_kubernetes() {
  local version cmd deb
  local -a debs all=()
  for version in "${MK_KUBE_VERSIONS[@]}"; do
    debs=()
    for cmd in kubeadm kubelet kubectl; do
      debs+=("$(kube_deb "${cmd}" "${version#v}" "${MIRROR_KUBE_DEB_REVISION}")")
    done
    build_step "kubernetes-${version}" "kube_debs ${version}" "${KUBE_POOL}" \
      "MIRROR_KUBE_DEB_REVISION MIRROR_KUBE_RELEASE_MODULE_VERSION" "${debs[@]}"
    all+=("${debs[@]}")
  done
  for deb in "${KUBE_POOL}"/kube{adm,let,ctl}_*.deb; do
    if [[ -f "${deb}" && " ${all[*]} " != *" ${deb} "* ]]; then
      rm -f "${deb}"
      mk_log "removed ${deb#"${MK_OUT}/"}: not a kit version"
    fi
  done
}

step_containerd_io() {
  local ver="${MIRROR_CONTAINERD_VERSION#v}-${MIRROR_CONTAINERD_DEB_REVISION}~${MIRROR_DOCKER_DISTRO}.${MIRROR_DOCKER_DISTRO_ID}~${MIRROR_DOCKER_SUITE}"
  build_step containerd.io containerd_debs "${DOCKER_ROOT}/${DOCKER_POOL_REL}" \
    "MIRROR_CONTAINERD_VERSION MIRROR_RUNC_VERSION MIRROR_CONTAINERD_DEB_REVISION MIRROR_DOCKER_DISTRO MIRROR_DOCKER_DISTRO_ID MIRROR_DOCKER_SUITE" \
    "${DOCKER_ROOT}/${DOCKER_POOL_REL}/containerd.io_${ver}_$(dpkg --print-architecture).deb"
}

# repo_key DEBDIR: what a published repository depends on: the .debs under
# DEBDIR, the signing key and lib.sh.
repo_key() {
  printf 'debs=%s key=%s lib=%s\n' \
    "$(find "$1" -name '*.deb' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sed "s#${MK_OUT}/##" | sha256sum | cut -c1-16)" \
    "$(mk_key_fingerprint)" "$(mk_hash "${KIT_DIR}/lib.sh" | cut -c1-16)"
}

# publish_step NAME DEBDIR SIGNED_FILE PUBLISH_ARG...: mk_publish_repo
# PUBLISH_ARG... unless the stamp of NAME holds repo_key DEBDIR.
publish_step() {
  local name="$1" debdir="$2" signed="$3"
  shift 3
  if mk_stamp_ok "debs-${name}" "$(repo_key "${debdir}")" "${signed}"; then
    mk_log "${name}: up to date"
    return 0
  fi
  mk_publish_repo "$@"
  mk_stamp_write "debs-${name}" "$(repo_key "${debdir}")"
}

step_kube_repo() {
  MK_REPO_ORIGIN="kvm-kubeadm mirror of pkgs.k8s.io" MK_REPO_LABEL="kubernetes v${KUBE_MINOR}" \
    publish_step kube-repo "${KUBE_REPO_DIR}" "${KUBE_REPO_DIR}/InRelease" flat "${KUBE_REPO_DIR}" Release.key
}

step_docker_repo() {
  MK_REPO_ORIGIN="kvm-kubeadm mirror of download.docker.com" MK_REPO_LABEL="Docker CE" \
    publish_step docker-repo "${DOCKER_ROOT}/dists" "${DOCKER_ROOT}/dists/${MIRROR_DOCKER_SUITE}/InRelease" \
    dists "${DOCKER_ROOT}" "${MIRROR_DOCKER_SUITE}" stable "${DOCKER_POOL_REL}" gpg
}

main() {
  local step
  local -a wanted=("${MK_ARGS[@]}")
  [[ ${#wanted[@]} -gt 0 ]] || wanted=("${STEPS[@]}")
  for step in "${wanted[@]}"; do
    case " ${STEPS[*]} " in
      *" ${step} "*) ;;
      *) mk_die "unknown step '${step}' (steps: ${STEPS[*]})" ;;
    esac
  done
  local start=${SECONDS}
  for step in "${wanted[@]}"; do
    mk_step "${step}" "step_${step//[.-]/_}"
  done
  mk_log "done in $((SECONDS - start))s: ${MK_WWW}"
}

main
