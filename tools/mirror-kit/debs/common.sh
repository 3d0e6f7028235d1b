# shellcheck shell=bash
# debs/common.sh: assemble a .deb from a staged root directory and the
# package's definition in debs/<package>/:
#
#   control     control file template (@KEY@ placeholders, # comment lines)
#   conffiles   optional, copied as is
#   (UNIT=...)  maintainer scripts rendered from debs/systemd/{postinst,prerm,postrm}
#
# Uses mk_log from lib.sh.

DEBS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# deb_subst KEY=VALUE...: stdin with each @KEY@ replaced by VALUE (the first
# KEY given wins); fails if a placeholder is left.
deb_subst() {
  local text kv
  text="$(cat)"
  for kv in "$@"; do
    text="${text//"@${kv%%=*}@"/"${kv#*=}"}"
  done
  if [[ "${text}" =~ @[A-Z_]+@ ]]; then
    mk_log "no value for ${BASH_REMATCH[0]}"
    return 1
  fi
  printf '%s\n' "${text}"
}

# deb_docs ROOT PACKAGE DIR: DIR's LICENSE and README.md as the package's
# documentation (what a spec's %license and %doc install).
deb_docs() {
  local doc="$1/usr/share/doc/$2" f
  install -d "${doc}"
  for f in LICENSE README.md; do
    install -m 0644 "$3/${f}" "${doc}/${f}"
  done
}

# deb_shlibs_depends BINARY...: the ${shlibs:Depends} that dpkg-shlibdeps
# computes for the dynamically linked BINARY... (from the installed libraries'
# symbols files, as a package build does).
deb_shlibs_depends() {
  local tmp line
  tmp="$(mktemp -d)"
  # dpkg-shlibdeps reads debian/control and wants the binaries in a
  # package's build directory (one with a DEBIAN directory).
  mkdir -p "${tmp}/debian/mirror-kit/usr/bin" "${tmp}/debian/mirror-kit/DEBIAN"
  printf 'Source: mirror-kit\n\nPackage: mirror-kit\nArchitecture: any\n' >"${tmp}/debian/control"
  cp "$@" "${tmp}/debian/mirror-kit/usr/bin/"
  line="$(cd "${tmp}" && dpkg-shlibdeps -O debian/mirror-kit/usr/bin/*)"
  rm -rf "${tmp}"
  line="${line#shlibs:Depends=}"
  [[ -n "${line}" ]] || { mk_log "dpkg-shlibdeps found no dependencies for $*"; return 1; }
  printf '%s\n' "${line}"
}

# deb_pack PACKAGE ROOT OUTDIR KEY=VALUE...: build OUTDIR/PACKAGE_VERSION_ARCH.deb
# from ROOT. Keys: VERSION and EPOCH (SOURCE_DATE_EPOCH: every file's mtime
# and the archive's timestamps) are required; UNIT=NAME.service adds the
# systemd maintainer scripts (START=restart also (re)starts it); any other key
# fills a placeholder of the control template.
deb_pack() {
  local pkg="$1" root="$2" outdir="$3"
  shift 3
  local def="${DEBS_DIR}/${pkg}" version="" epoch="" unit="" kv arch size script
  for kv in "$@"; do
    case "${kv}" in
      VERSION=*) version="${kv#*=}" ;;
      EPOCH=*) epoch="${kv#*=}" ;;
      UNIT=*) unit="${kv#*=}" ;;
    esac
  done
  [[ -n "${version}" && -n "${epoch}" ]] || { mk_log "deb_pack ${pkg}: VERSION and EPOCH are required"; return 1; }
  arch="$(dpkg --print-architecture)"
  rm -rf "${root}/DEBIAN"
  size="$(du -s -k --apparent-size "${root}" | cut -f1)"
  install -d "${root}/DEBIAN"
  grep -v '^#' "${def}/control" | deb_subst "$@" "ARCH=${arch}" "INSTALLED_SIZE=${size}" >"${root}/DEBIAN/control"
  if [[ -f "${def}/conffiles" ]]; then
    install -m 0644 "${def}/conffiles" "${root}/DEBIAN/conffiles"
  fi
  if [[ -n "${unit}" ]]; then
    for script in postinst prerm postrm; do
      deb_subst "$@" "START=" <"${DEBS_DIR}/systemd/${script}" >"${root}/DEBIAN/${script}"
      chmod 0755 "${root}/DEBIAN/${script}"
    done
  fi
  find "${root}" -exec touch -h -d "@${epoch}" {} +
  local deb="${outdir}/${pkg}_${version}_${arch}.deb"
  mkdir -p "${outdir}"
  SOURCE_DATE_EPOCH="${epoch}" nice -n 10 dpkg-deb --root-owner-group -Zxz --build "${root}" "${deb}.tmp" >/dev/null
  mv -f "${deb}.tmp" "${deb}"
  mk_log "built ${deb#"${MK_OUT}/"} ($(du -h "${deb}" | cut -f1))"
}

# module_epoch MODULE@VERSION: the module version's commit time (the proxy's
# .info Time) as seconds since the epoch, for SOURCE_DATE_EPOCH.
module_epoch() {
  local time
  time="$(module_info "$1" Time)"
  [[ -n "${time}" ]] || { mk_log "no time for $1"; return 1; }
  date -d "${time}" +%s
}

# go_install_into DIR ARG...: `go install ARG...` (module@version mode, so
# each module is built with its own go.mod) with GOBIN=DIR, niced and with
# one build job, outside any module.
go_install_into() {
  local gobin="$1"
  shift
  mkdir -p "${gobin}"
  (cd "${gobin}" && GOWORK=off GOBIN="${gobin}" nice -n 10 go install -p 1 -trimpath "$@")
}
