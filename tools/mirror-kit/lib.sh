# shellcheck shell=bash
# lib.sh: shared helpers of the offline mirror kit (tools/mirror-kit/*.sh).
#
#   source "${KIT_DIR}/lib.sh"   (also sources tools/versions.env and
#                               tools/toolchain/kube-tools.sh)
#   mk_init NAME "$@"        parses --out DIR and --force; the other arguments
#                            are left in MK_ARGS; -h/--help prints the calling
#                            script's header comment
#
# After mk_init:
#   MK_ROOT    the repository root
#   MK_OUT     the kit's output directory (default <root>/.cache/mirror)
#   MK_WWW     ${MK_OUT}/www: everything the mirror serves over HTTP
#   MK_KEYS    ${MK_OUT}/keys: the mirror's signing key (a gpg home), made once
#   MK_BUILD   ${MK_OUT}/build: scratch space (wrapper modules, package roots)
#   MK_STAMPS  ${MK_OUT}/stamps: one stamp per step, keyed by its inputs
#   MK_FORCE   1 when --force was given (every stamp is ignored)
#
# Functions:
#   mk_log MSG...               one log line on stderr
#   mk_die MSG...               log and exit 1
#   mk_step NAME CMD...         run CMD, log how long it took (and append it to
#                               ${MK_OUT}/logs/times.log)
#   mk_stamp_ok NAME KEY [FILE...] / mk_stamp_write NAME KEY
#   mk_hash PATH...             sha256 over files (directories recursively)
#   mk_require_debs PKG...      apt-get install the Debian packages that are missing
#   mk_gpg ARG...               gpg on the mirror's key ring
#   mk_signing_key              the signing key's fingerprint (made on first use)
#   mk_key_fingerprint          the same, empty if there is no key yet
#   mk_publish_repo LAYOUT ...  index and sign an apt repository (see below)
#   mk_kube_versions            MK_KUBE_VERSIONS: the Kubernetes versions the kit serves

MK_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MK_ROOT="$(cd "${MK_LIB_DIR}/../.." && pwd)"
# The pinned versions, and the Go build helpers of tools/toolchain/kube-tools.sh
# (module_info, kube_wrapper_module, kube_go_build), which log through `log`.
# shellcheck source=SCRIPTDIR/../versions.env
source "${MK_ROOT}/tools/versions.env"
# shellcheck source=SCRIPTDIR/../toolchain/kube-tools.sh
source "${MK_ROOT}/tools/toolchain/kube-tools.sh"
MK_NAME=mirror-kit
MK_FORCE=0
MK_ARGS=()
# The key's user id: a reserved domain, the key signs nothing but this mirror.
MK_KEY_UID="kvm-kubeadm offline mirror <mirror@kvm-kubeadm.invalid>"

mk_log() { printf '[%s] %s\n' "${MK_NAME}" "$*" >&2; }
# kube-tools.sh logs through `log`.
log() { mk_log "$@"; }
mk_die() {
  mk_log "ERROR: $*"
  exit 1
}

mk_init() {
  MK_NAME="$1"
  shift
  if [[ " $* " == *" -h "* || " $* " == *" --help "* ]]; then
    # The script's header comment, up to its `set -euo pipefail`.
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
  fi
  local out="${MK_ROOT}/.cache/mirror"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --out)
        [[ $# -ge 2 ]] || mk_die "--out needs a directory"
        out="$2"
        shift 2
        ;;
      --out=*)
        out="${1#--out=}"
        shift
        ;;
      --force)
        MK_FORCE=1
        shift
        ;;
      *)
        MK_ARGS+=("$1")
        shift
        ;;
    esac
  done
  mkdir -p "${out}"
  MK_OUT="$(cd "${out}" && pwd)"
  MK_WWW="${MK_OUT}/www"
  MK_KEYS="${MK_OUT}/keys"
  MK_BUILD="${MK_OUT}/build"
  MK_STAMPS="${MK_OUT}/stamps"
  mkdir -p "${MK_WWW}" "${MK_BUILD}" "${MK_STAMPS}"
}

# mk_step NAME CMD...: run CMD and log its wall time. CMD runs outside any
# condition, so `set -e` still stops the script at its first failing command.
# Call mk_step only at top level (never as `if mk_step ...`).
mk_step() {
  local name="$1" start ms
  shift
  start="$(date +%s%N)"
  "$@"
  ms=$((($(date +%s%N) - start) / 1000000))
  mk_log "$(printf '%s: %d.%01ds' "${name}" $((ms / 1000)) $((ms % 1000 / 100)))"
  mkdir -p "${MK_OUT}/logs"
  printf '%s %s: %s %d.%03ds\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${MK_NAME}" "${name}" $((ms / 1000)) $((ms % 1000)) \
    >>"${MK_OUT}/logs/times.log"
}

# mk_stamp_ok NAME KEY [FILE...]: the stamp of NAME holds KEY and every FILE exists.
mk_stamp_ok() {
  local name="$1" key="$2" f
  shift 2
  [[ "${MK_FORCE}" == 0 && -f "${MK_STAMPS}/${name}" ]] || return 1
  [[ "$(cat "${MK_STAMPS}/${name}")" == "${key}" ]] || return 1
  for f in "$@"; do
    [[ -e "${f}" ]] || return 1
  done
}

mk_stamp_write() { printf '%s\n' "$2" >"${MK_STAMPS}/$1"; }

# mk_hash PATH...: one sha256 over the given files and the files under the
# given directories, by path relative to the repository root.
mk_hash() {
  find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sed "s#${MK_ROOT}/##" |
    sha256sum | cut -d' ' -f1
}

# mk_require_debs PKG...: install the Debian packages that are not installed.
mk_require_debs() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q '^install ok installed$' || missing+=("${pkg}")
  done
  [[ ${#missing[@]} -gt 0 ]] || return 0
  [[ ${EUID} -eq 0 ]] || mk_die "missing Debian packages (install them as root): ${missing[*]}"
  mk_log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
    "${missing[@]}" >&2 || {
    apt-get -o DPkg::Lock::Timeout=300 update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
      "${missing[@]}" >&2
  }
}

# mk_kube_versions: set MK_KUBE_VERSIONS to the Kubernetes versions the kit serves,
# MIRROR_KUBE_VERSION first, then the older patch releases of MIRROR_KUBE_UPGRADE_FROM
# (tools/versions.env). The kit serves one minor's package repository, so each must
# be a release of MIRROR_KUBE_VERSION's minor, older than it.
mk_kube_versions() {
  local version
  MK_KUBE_VERSIONS=("${MIRROR_KUBE_VERSION}")
  for version in ${MIRROR_KUBE_UPGRADE_FROM:-}; do
    [[ "${version}" =~ ^v1\.[0-9]+\.[0-9]+$ && "${version%.*}" == "${MIRROR_KUBE_VERSION%.*}" ]] ||
      mk_die "MIRROR_KUBE_UPGRADE_FROM: ${version} is not a ${MIRROR_KUBE_VERSION%.*}.N release (tools/versions.env)"
    ((${version##*.} < ${MIRROR_KUBE_VERSION##*.})) ||
      mk_die "MIRROR_KUBE_UPGRADE_FROM: ${version} is not older than MIRROR_KUBE_VERSION ${MIRROR_KUBE_VERSION}"
    MK_KUBE_VERSIONS+=("${version}")
  done
}

mk_gpg() { gpg --homedir "${MK_KEYS}" --batch --quiet "$@"; }

# mk_gpg_stop: stop the gpg-agent that gpg starts for the mirror's key ring.
mk_gpg_stop() { gpgconf --homedir "${MK_KEYS}" --kill all 2>/dev/null || true; }

# mk_key_fingerprint: the fingerprint of the mirror's signing key, empty
# before it is made (reads the public key ring: starts no gpg-agent).
mk_key_fingerprint() {
  [[ -d "${MK_KEYS}" ]] || return 0
  mk_gpg --list-keys --with-colons 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }'
}

# mk_signing_key: print the fingerprint of the mirror's signing key, making the
# key (ed25519, no passphrase, no expiry) the first time.
mk_signing_key() {
  local fpr
  fpr="$(mk_key_fingerprint)"
  if [[ -z "${fpr}" ]]; then
    mk_log "making the mirror's signing key in ${MK_KEYS}"
    install -d -m 0700 "${MK_KEYS}"
    mk_gpg --passphrase '' --quick-generate-key "${MK_KEY_UID}" ed25519 sign never
    mk_gpg_stop
    fpr="$(mk_key_fingerprint)"
  fi
  [[ -n "${fpr}" ]] || mk_die "no signing key in ${MK_KEYS}"
  printf '%s\n' "${fpr}"
}

# mk_publish_repo flat  DIR KEYFILE
#   pkgs.k8s.io layout: the .debs anywhere under DIR; DIR gets Packages(.gz),
#   Release, InRelease, Release.gpg and the armored public key as DIR/KEYFILE.
#   apt line: deb [signed-by=...] <url of DIR>/ /
# mk_publish_repo dists ROOT SUITE COMPONENT POOL KEYFILE
#   Debian layout: the .debs under ROOT/POOL; ROOT/dists/SUITE gets
#   COMPONENT/binary-<arch>/Packages(.gz), Release, InRelease, Release.gpg and
#   the armored public key goes to ROOT/KEYFILE.
#   apt line: deb [signed-by=...] <url of ROOT> SUITE COMPONENT
# Origin and Label come from MK_REPO_ORIGIN and MK_REPO_LABEL.
mk_publish_repo() {
  local layout="$1" fpr arch release_dir
  shift
  fpr="$(mk_signing_key)"
  arch="$(dpkg --print-architecture)"
  local -a release_opts=(
    -o "APT::FTPArchive::Release::Origin=${MK_REPO_ORIGIN:-kvm-kubeadm mirror}"
    -o "APT::FTPArchive::Release::Label=${MK_REPO_LABEL:-kvm-kubeadm mirror}"
    -o "APT::FTPArchive::Release::Architectures=${arch}"
  )
  case "${layout}" in
    flat)
      local dir="$1" keyfile="$2"
      release_dir="${dir}"
      (cd "${dir}" && apt-ftparchive packages . | sed 's#^Filename: \./#Filename: #') >"${dir}/Packages"
      mk_log "indexed $(grep -c '^Package:' "${dir}/Packages") package(s) in ${dir#"${MK_OUT}/"}"
      gzip -9nc "${dir}/Packages" >"${dir}/Packages.gz"
      mk_gpg --armor --export "${fpr}" >"${dir}/${keyfile}"
      ;;
    dists)
      local root="$1" suite="$2" component="$3" pool="$4" keyfile="$5"
      release_dir="${root}/dists/${suite}"
      local index="${release_dir}/${component}/binary-${arch}"
      mkdir -p "${index}"
      (cd "${root}" && apt-ftparchive packages "${pool}") >"${index}/Packages"
      mk_log "indexed $(grep -c '^Package:' "${index}/Packages") package(s) in ${index#"${MK_OUT}/"}"
      gzip -9nc "${index}/Packages" >"${index}/Packages.gz"
      release_opts+=(
        -o "APT::FTPArchive::Release::Suite=${suite}"
        -o "APT::FTPArchive::Release::Codename=${suite}"
        -o "APT::FTPArchive::Release::Components=${component}"
      )
      mk_gpg --armor --export "${fpr}" >"${root}/${keyfile}"
      ;;
    *) mk_die "mk_publish_repo: unknown layout '${layout}' (flat or dists)" ;;
  esac
  local tmp="${release_dir}/.Release.tmp"
  (cd "${release_dir}" && apt-ftparchive "${release_opts[@]}" release .) >"${tmp}"
  mv -f "${tmp}" "${release_dir}/Release"
  rm -f "${release_dir}/InRelease" "${release_dir}/Release.gpg"
  mk_gpg --local-user "${fpr}" --digest-algo SHA512 --clearsign -o "${release_dir}/InRelease" "${release_dir}/Release"
  mk_gpg --local-user "${fpr}" --digest-algo SHA512 --detach-sign -o "${release_dir}/Release.gpg" "${release_dir}/Release"
  mk_gpg_stop
}
