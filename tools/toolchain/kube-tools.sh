# shellcheck shell=bash
# kube-tools.sh: the real tools that judge the kubeadm and containerd configs
# the program renders. Sourced by tools/build-toolchain.sh, whose helpers
# (log, stamp_ok, stamp_write) and directories (BIN_DIR, TC_DIR) it uses:
#
#   build_kubeadm         kubeadm ${KUBEADM_VERSION} from module k8s.io/kubernetes
#   kube_wrapper_module, kube_go_build
#                         the wrapper module and release build flags for any
#                         k8s.io/kubernetes main package (also used by
#                         tools/mirror-kit/build-images.sh)
#   build_containerd_as VERSION NAME
#                         containerd 2.x from github.com/containerd/containerd/v2
#                         (v2.0-v2.2 write config version 3; v2.3+ write version 4,
#                         same CRI table paths)
#   install_containerd1   Debian's `containerd` package (1.x, config version 2)
#                         via apt-get; no service is started
#
# Go builds use `-p 1`: kubeadm's link step alone needs about 1 GB.

KUBE_TOOLS_GO_P=1

# module_info MODULE@VERSION FIELD: download the module (Go's default
# module cache) and print one string field of `go mod download -json`
# (GoMod, Dir, Time, ...).  Runs in an empty module so that no go.mod of the
# caller is touched.
module_info() {
  local modver="$1" field="$2" tmp json
  tmp="$(mktemp -d)"
  printf 'module kubetoolsprobe\n' >"${tmp}/go.mod"
  if ! json="$(cd "${tmp}" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "${modver}")"; then
    rm -rf "${tmp}"
    log "go mod download ${modver} failed: ${json}"
    return 1
  fi
  rm -rf "${tmp}"
  if [[ "${field}" == Time ]]; then
    # Time is in the .info file, not in the download JSON.
    local info
    info="$(printf '%s\n' "${json}" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",\{0,1\}$/\1/p')"
    sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${info}"
    return 0
  fi
  printf '%s\n' "${json}" | sed -n "s/^[[:space:]]*\"${field}\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p"
}

# kube_wrapper_module DIR VERSION NAME PKG...: write, in DIR (emptied), a Go
# module NAME that can build the main packages PKG... of k8s.io/kubernetes
# VERSION (v1.N.M), and `go mod tidy` it.  k8s.io/kubernetes is not meant to be
# a dependency: its go.mod points every staging module (k8s.io/api,
# k8s.io/client-go, ...) at ./staging/src/..., which the module zip does not
# contain, so each is replaced by its published version v0.N.M.
kube_wrapper_module() {
  local src="$1" version="$2" name="$3"
  shift 3
  if [[ ! "${version}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
    log "kubernetes version must look like v1.N.M, got '${version}'"
    return 1
  fi
  local staging="v0.${version#v1.}"
  command -v go >/dev/null || { log "go not found"; return 1; }
  local kube_gomod
  kube_gomod="$(module_info "k8s.io/kubernetes@${version}" GoMod)"
  [[ -f "${kube_gomod}" ]] || { log "no go.mod for k8s.io/kubernetes@${version}"; return 1; }
  rm -rf "${src}" && mkdir -p "${src}" || return 1
  local go_line godebug_line replaces
  go_line="$(sed -n 's/^go \([0-9.]*\)$/go \1/p' "${kube_gomod}" | head -n1)"
  godebug_line="$(sed -n '/^godebug /p' "${kube_gomod}" | head -n1)"
  replaces="$(awk -v v="${staging}" '
    /^replace[[:space:]]*\(/ { inblock = 1; next }
    inblock && /^\)/ { inblock = 0; next }
    inblock && $2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }
    !inblock && $1 == "replace" && $3 == "=>" && $4 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $2, $2, v }
  ' "${kube_gomod}")"
  [[ -n "${replaces}" ]] || { log "found no staging replace directives in ${kube_gomod}"; return 1; }
  # Non-staging replace directives (none in v1.36.x) would have to be copied
  # too: refuse to build silently wrong.
  if awk '
      /^replace[[:space:]]*\(/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      inblock && $2 == "=>" && $3 !~ /^\.\/staging\// { bad = 1 }
      !inblock && $1 == "replace" && $4 !~ /^\.\/staging\// { bad = 1 }
      END { exit bad ? 0 : 1 }' "${kube_gomod}"; then
    log "k8s.io/kubernetes@${version} has non-staging replace directives; update kube_wrapper_module"
    return 1
  fi
  {
    printf 'module %s\n\n%s\n\n' "${name}" "${go_line:-go 1.26.0}"
    if [[ -n "${godebug_line}" ]]; then printf '%s\n\n' "${godebug_line}"; fi
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n%s\n)\n' "${version}" "${replaces}"
  } >"${src}/go.mod"
  local pkg
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for pkg in "$@"; do printf '\t_ "%s"\n' "${pkg}"; done
    printf ')\n'
  } >"${src}/tools.go"
  (cd "${src}" && GOWORK=off go mod tidy)
}

# kube_go_build DIR VERSION OUT PKG...: build PKG... (main packages of
# k8s.io/kubernetes) in the wrapper module DIR into OUT (a file for one
# package, a directory ending in / for several), with the tags, flags and
# version variables that hack/lib/golang.sh and hack/lib/version.sh use for a
# release build (kubeadm takes its own version for defaults and version-skew
# checks, so gitVersion must be right).  KUBE_TOOLS_NICE (default 0) is the
# nice level.
kube_go_build() {
  local src="$1" version="$2" out="$3"
  shift 3
  [[ "${version}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { log "bad kubernetes version '${version}'"; return 1; }
  local minor="${BASH_REMATCH[1]}" build_date
  # `|| return`: callers may run this in a condition, where set -e is off.
  build_date="$(module_info "k8s.io/kubernetes@${version}" Time)" || return 1
  local ldflags="-s -w" pkg key val
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for key in gitVersion gitCommit gitMajor gitMinor gitTreeState buildDate; do
      case "${key}" in
        gitVersion) val="${version}" ;;
        gitCommit) val="" ;; # unknown: the module zip has no git metadata
        gitMajor) val=1 ;;
        gitMinor) val="${minor}" ;;
        gitTreeState) val=clean ;;
        buildDate) val="${build_date}" ;;
      esac
      ldflags+=" -X '${pkg}.${key}=${val}'"
    done
  done
  (
    cd "${src}" || exit 1
    GOWORK=off CGO_ENABLED=0 nice -n "${KUBE_TOOLS_NICE:-0}" go build -p "${KUBE_TOOLS_GO_P}" -trimpath \
      -tags selinux,notest,grpcnotrace -ldflags "all=${ldflags}" -o "${out}" "$@"
  )
}

build_kubeadm() {
  local version="${KUBEADM_VERSION:?KUBEADM_VERSION is not set (tools/versions.env)}"
  local bin="${BIN_DIR}/kubeadm"
  if stamp_ok kubeadm "${version}" "${bin}"; then
    log "kubeadm ${version}: up to date"
    return 0
  fi
  log "building kubeadm ${version}"
  local src="${TC_DIR}/src/kubeadm-${version}" pkg=k8s.io/kubernetes/cmd/kubeadm
  mkdir -p "${BIN_DIR}"
  local tmpbin="${bin}.tmp.$$"
  if ! kube_wrapper_module "${src}" "${version}" kubeadm-build "${pkg}" \
    || ! kube_go_build "${src}" "${version}" "${tmpbin}" "${pkg}"; then
    rm -f "${tmpbin}"
    log "kubeadm ${version}: build failed"
    return 1
  fi
  local got
  got="$("${tmpbin}" version -o short)"
  if [[ "${got}" != "${version}" ]]; then
    rm -f "${tmpbin}"
    log "kubeadm version -o short printed '${got}', expected '${version}'"
    return 1
  fi
  mv -f "${tmpbin}" "${bin}"
  stamp_write kubeadm "${version}"
  log "kubeadm ${version}: built ${bin}"
}

build_containerd_as() {
  local version="${1:?usage: build_containerd_as VERSION NAME}"
  local name="${2:?usage: build_containerd_as VERSION NAME}"
  local bin="${BIN_DIR}/${name}"
  if stamp_ok "${name}" "${version}" "${bin}"; then
    log "${name} ${version}: up to date"
    return 0
  fi
  command -v go >/dev/null || { log "go not found"; return 1; }
  log "building containerd ${version}"
  local mod=github.com/containerd/containerd/v2
  # As the Makefile's static build (STATIC=1): no cgo, so no btrfs snapshotter.
  local ldflags="-s -w -X ${mod}/version.Version=${version} -X ${mod}/version.Package=${mod}"
  local gobin
  gobin="$(mktemp -d)"
  if ! (
    # `go install pkg@version` builds the module as released (its own go.mod
    # and go.sum), outside any caller module.
    cd "${gobin}"
    GOWORK=off CGO_ENABLED=0 GOBIN="${gobin}" go install -p "${KUBE_TOOLS_GO_P}" -trimpath \
      -tags "urfave_cli_no_docs osusergo netgo static_build" \
      -ldflags "${ldflags}" "${mod}/cmd/containerd@${version}"
  ); then
    rm -rf "${gobin}"
    log "containerd ${version}: build failed"
    return 1
  fi
  local got
  got="$("${gobin}/containerd" --version)"
  if [[ "${got}" != *" ${version}"* ]]; then
    rm -rf "${gobin}"
    log "containerd --version printed '${got}', expected ${version}"
    return 1
  fi
  mkdir -p "${BIN_DIR}"
  mv -f "${gobin}/containerd" "${bin}"
  rm -rf "${gobin}"
  stamp_write "${name}" "${version}"
  log "${name} ${version}: built ${bin}"
}

install_containerd1() {
  local want="${CONTAINERD1_DEB_VERSION:-}"
  local link="${BIN_DIR}/containerd1"
  local have=""
  have="$(dpkg-query -W -f='${Status} ${Version}' containerd 2>/dev/null || true)"
  if [[ "${have}" == "install ok installed "* ]]; then
    have="${have##* }"
  else
    have=""
  fi
  if [[ -n "${have}" && ( -z "${want}" || "${have}" == "${want}" ) ]] \
    && stamp_ok containerd1 "${have}" "${link}"; then
    log "containerd1 ${have}: up to date"
    return 0
  fi
  if [[ -z "${have}" || ( -n "${want}" && "${have}" != "${want}" ) ]]; then
    if [[ ${EUID} -ne 0 ]]; then
      log "install_containerd1: apt-get needs root"
      return 1
    fi
    local pkg=containerd
    if [[ -n "${want}" ]]; then pkg="containerd=${want}"; fi
    log "installing ${pkg} via apt-get (no service is started)"
    # Keep the package's maintainer scripts from starting the daemon (exit
    # 101 = action forbidden); an existing policy-rc.d is left as it is.
    local created_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 0755 /usr/sbin/policy-rc.d
      created_policy=1
    fi
    {
      if ! apt-cache show "${pkg}" >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=300 update -q
      fi
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
        install -y -q --no-install-recommends "${pkg}"
    } || rc=$?
    if [[ ${created_policy} -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ ${rc} -ne 0 ]]; then
      log "apt-get install ${pkg} failed (${rc})"
      return "${rc}"
    fi
    have="$(dpkg-query -W -f='${Version}' containerd)"
  fi
  mkdir -p "${BIN_DIR}"
  ln -sfn /usr/bin/containerd "${link}"
  "${link}" --version >/dev/null
  stamp_write containerd1 "${have}"
  log "containerd1 ${have}: ${link} -> /usr/bin/containerd"
}
