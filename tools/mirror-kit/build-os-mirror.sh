#!/usr/bin/env bash
# Build the partial Debian 12 mirror of the offline mirror kit: Debian's own
# signed index files for the suites the guest image lists, and only the .debs
# a node installs from them (os-mirror/packages.list, plus what the kit's kube
# and containerd.io packages depend on), with their dependency closure.
#
#   <out>/www/debian/dists/bookworm{,-updates}/           InRelease, Release, Release.gpg,
#   <out>/www/debian-security/dists/bookworm-security/    main/binary-amd64/Packages.xz,
#                                                          main/i18n/Translation-en.xz, and
#                                                          both again as by-hash/SHA256/<sha256>
#   <out>/www/debian/pool/..., <out>/www/debian-security/pool/...
#                                                          the .debs, at their Filename: paths
#
# A node uses it with mirrors.osApt = the mirror's URL (scripts/packages.sh,
# set_os_mirror: http://deb.debian.org/debian -> <url>/debian, ...): apt there
# verifies everything with its stock debian-archive-keyring.
#
# The index files come from a private apt state in <out>/build/os-mirror/apt
# (its own sources.list with the guest image's three lines, its own lists; the
# host's apt configuration and lists stay untouched), kept as Debian serves
# them: Packages.xz and Translation-en.xz byte for byte, so every hash in
# InRelease matches. apt on a node asks for by-hash/SHA256/<sha256 of the .xz>
# first (InRelease says Acquire-By-Hash: yes), so both are served under that
# name too; Translation-en is needed, since a 404 for it fails apt-get update.
# Release and Release.gpg are served when Release.gpg verifies and Release
# equals InRelease's text (apt only falls back to them without InRelease).
# The closure is the union of
#   - apt-cache depends --recurse over Depends and Pre-Depends, every
#     alternative and provider: what any starting system may have to upgrade;
#   - apt-get install --print-uris against an empty dpkg status with
#     Recommends on: what apt picks, Recommends included, since the packages
#     stage installs with apt's default (Recommends on).
#
# Usage: tools/mirror-kit/build-os-mirror.sh [--out DIR] [--force] [--no-update]
#   --out DIR    output directory (default <repo>/.cache/mirror)
#   --force      ignore the stamp: resolve, check and publish everything again
#   --no-update  use the index files fetched last time (no apt-get update)
# Environment (as tools/build-guest-image.sh):
#   DEBIAN_MIRROR           default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
# Reaches the Debian archive through apt (http_proxy is honoured). A run whose
# stamp (<out>/stamps/os-mirror: package list, index dates) matches does
# nothing after the index refresh; each step's duration is printed and
# appended to <out>/logs/times.log.
#
# bookworm-security's Release is valid for 7 days (Valid-Until): rebuild the
# mirror within that time or apt on the nodes refuses it as expired.
set -euo pipefail
umask 022

KIT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${KIT_DIR}/lib.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
mk_init build-os-mirror "$@"
UPDATE=1
for arg in "${MK_ARGS[@]}"; do
  case "${arg}" in
    --no-update) UPDATE=0 ;;
    *) mk_die "unknown argument: ${arg} (see --help)" ;;
  esac
done

readonly SUITE=bookworm
readonly DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
readonly DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly PACKAGE_LIST="${KIT_DIR}/os-mirror/packages.list"
ARCH="$(dpkg --print-architecture)"
STATE="${MK_BUILD}/os-mirror"
APT_DIR="${STATE}/apt"
MANIFEST="${STATE}/debs.tsv" # relpath size sha256 filename, one .deb a line
TARGETS=()
INRELEASES=()

# The guest image's sources (tools/build-guest-image.sh), in the same order.
SOURCES=(
  "${DEBIAN_MIRROR} ${SUITE} main"
  "${DEBIAN_MIRROR} ${SUITE}-updates main"
  "${DEBIAN_SECURITY_MIRROR} ${SUITE}-security main"
)

os_apt() { APT_CONFIG="${APT_DIR}/apt.conf" "$@"; }

# query_apt CMD ARG...: CMD on a decompressed copy of the lists (made by
# step_query_lists). From xz lists apt decompresses from the start for every
# package record it reads: minutes for a closure, a second from plain files.
query_apt() {
  APT_CONFIG="${APT_DIR}/apt.conf" "$1" -o Dir::State::Lists="${STATE}/query/lists" \
    -o Dir::Cache="${STATE}/query/cache" "${@:2}"
}

# The path of URL below its host: http://deb.debian.org/debian/pool/x -> debian/pool/x,
# with apt's %-escapes decoded (libstdc%2b%2b6 -> libstdc++6).
url_path() {
  local path="${1#*://}"
  path="${path#*/}"
  printf '%b' "${path//%/\\x}"
}

# Owned by _apt when run as root, so apt downloads into DIR sandboxed.
sandbox_dir() {
  mkdir -p "$1"
  if [[ ${EUID} -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$1"
  fi
}

# write_if_changed FILE: stdin into FILE, unless FILE holds it already.
write_if_changed() {
  local new
  new="$(cat)"
  [[ -f "$1" && "$(cat "$1")" == "${new}" ]] || printf '%s\n' "${new}" >"$1"
}

step_prepare() {
  mk_require_debs gpgv debian-archive-keyring
  [[ -s "${KEYRING}" ]] || mk_die "${KEYRING} missing (package debian-archive-keyring)"
  mkdir -p "${APT_DIR}/etc/parts" "${APT_DIR}/lists/partial" "${APT_DIR}/cache/archives/partial"
  # apt rebuilds its cache when these change (also their mtime): write only news.
  [[ -e "${APT_DIR}/status" ]] || : >"${APT_DIR}/status"
  local line
  for line in "${SOURCES[@]}"; do
    printf 'deb [signed-by=%s] %s\n' "${KEYRING}" "${line}"
  done | write_if_changed "${APT_DIR}/etc/sources.list"
  # Only this file configures the private apt (Dir::Etc::Parts is empty), so
  # the host's settings (GzipIndexes, Languages "none", ...) do not apply.
  write_if_changed "${APT_DIR}/apt.conf" <<CONF
Dir::Etc::SourceList "${APT_DIR}/etc/sources.list";
Dir::Etc::SourceParts "${APT_DIR}/etc/parts";
Dir::Etc::Parts "${APT_DIR}/etc/parts";
Dir::Etc::Preferences "${APT_DIR}/etc/preferences";
Dir::Etc::PreferencesParts "${APT_DIR}/etc/parts";
Dir::State::Lists "${APT_DIR}/lists";
Dir::State::status "${APT_DIR}/status";
Dir::Cache "${APT_DIR}/cache";
APT::Architectures { "${ARCH}"; };
Acquire::Languages { "en"; };
Acquire::Retries "3";
Acquire::IndexTargets::deb::Packages::KeepCompressed "true";
Acquire::IndexTargets::deb::Packages::KeepCompressedAs "xz";
Acquire::IndexTargets::deb::Translations::KeepCompressed "true";
Acquire::IndexTargets::deb::Translations::KeepCompressedAs "xz";
CONF
}

step_update() {
  local out
  out="$(os_apt apt-get -q update 2>&1)" || mk_die "apt-get update failed:"$'\n'"${out}"
  if grep -E '^(W|E|Err):' <<<"${out}" >&2; then
    mk_die "apt-get update reported the problems above"
  fi
}

# Every source's InRelease as the private apt stored it.
find_inreleases() {
  local base list
  INRELEASES=()
  # shellcheck disable=SC2016 # apt's format variables, not shell expansions
  while IFS='|' read -r base list; do
    [[ -s "${list}" ]] || mk_die "no InRelease for ${base} (run without --no-update)"
    INRELEASES+=("${base}|${list}")
  done < <(os_apt apt-get indextargets --format '$(BASE_URI)|$(FILENAME)' 'Identifier: Packages' |
    sed -E 's#_[^_]*_binary-[^_]*_Packages(\.[a-z0-9]+)?$#_InRelease#' | sort -u)
  [[ ${#INRELEASES[@]} -eq ${#SOURCES[@]} ]] || mk_die "expected ${#SOURCES[@]} suites, apt knows ${#INRELEASES[@]}"
}

# field_names DEB FIELD: the package names in a relation field of DEB
# ("a (>= 1), b | c:any" -> a, b, c), one a line.
field_names() {
  dpkg-deb -f "$1" "$2" | sed -E 's/[,|]/\n/g' | sed -E 's/\([^)]*\)//; s/:[a-z0-9]+//; s/[[:space:]]//g; /^$/d'
}

# TARGETS: packages.list, plus the Depends, Pre-Depends and Recommends of the
# kit's own .debs (under www/kubernetes and www/docker) that they do not
# provide themselves.
read_targets() {
  local deb name provided=" "
  local -a debs=() needed=()
  mapfile -t TARGETS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "${PACKAGE_LIST}")
  mapfile -t debs < <(find "${MK_WWW}/kubernetes" "${MK_WWW}/docker" -name '*.deb' 2>/dev/null | LC_ALL=C sort)
  for deb in "${debs[@]}"; do
    provided+="$(dpkg-deb -f "${deb}" Package) $(field_names "${deb}" Provides | tr '\n' ' ')"
    mapfile -t -O "${#needed[@]}" needed < <(
      field_names "${deb}" Depends
      field_names "${deb}" Pre-Depends
      field_names "${deb}" Recommends
    )
  done
  for name in "${needed[@]}"; do
    [[ "${provided}" == *" ${name} "* ]] || TARGETS+=("${name}")
  done
  mapfile -t TARGETS < <(printf '%s\n' "${TARGETS[@]}" | LC_ALL=C sort -u)
  for name in "${TARGETS[@]}"; do
    [[ "$(os_apt apt-cache showpkg "${name}" 2>/dev/null | head -n 1)" == "Package: ${name}" ]] ||
      mk_die "${name} is neither in Debian's ${SUITE} index nor in the kit's repositories"
  done
  mk_log "${#TARGETS[@]} package(s) wanted (${#debs[@]} kit .deb(s) read): ${TARGETS[*]}"
}

stamp_key() {
  local entry
  printf 'kit=%s arch=%s\n' "$(mk_hash "${BASH_SOURCE[0]}" "${KIT_DIR}/os-mirror" "${KIT_DIR}/lib.sh" | cut -c1-16)" "${ARCH}"
  printf 'source=%s\n' "${SOURCES[@]}"
  printf 'target=%s\n' "${TARGETS[@]}"
  for entry in "${INRELEASES[@]}"; do
    printf 'index=%s %s\n' "${entry%%|*}" "$(sed -n 's/^Date: //p' "${entry#*|}")"
  done
}

# Every .deb of the manifest is in www with its size.
pool_complete() {
  local rel size _
  [[ -s "${MANIFEST}" ]] || return 1
  while IFS=$'\t' read -r rel size _; do
    [[ "$(stat -c %s "${MK_WWW}/${rel}" 2>/dev/null)" == "${size}" ]] || return 1
  done <"${MANIFEST}"
}

step_query_lists() {
  local list query="${STATE}/query"
  rm -rf "${query}"
  mkdir -p "${query}/lists/partial" "${query}/cache/archives/partial"
  for list in "${APT_DIR}/lists/"*_*; do
    /usr/lib/apt/apt-helper cat-file "${list}" >"${query}/lists/$(basename "${list%.xz}")"
  done
}

step_resolve() {
  local names
  names="$(
    {
      query_apt apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "${TARGETS[@]}" | grep -v '^[[:space:]<]'
      query_apt apt-get install -qq --print-uris -o APT::Install-Recommends=true \
        -o APT::Install-Suggests=false "${TARGETS[@]}" |
        awk '/^\x27/ { n = $2; sub(/_.*/, "", n); print n }'
    } | LC_ALL=C sort -u
  )"
  [[ -n "${names}" ]] || mk_die "empty closure"
  local uri filename size hash
  # shellcheck disable=SC2086 # one package name a word
  query_apt apt-get download --print-uris ${names} | while read -r uri filename size hash; do
    uri="${uri//\'/}"
    printf '%s\t%s\t%s\t%s\n' "$(url_path "${uri}")" "${size}" "${hash#SHA256:}" "${filename}"
  done | LC_ALL=C sort >"${MANIFEST}.new"
  mv -f "${MANIFEST}.new" "${MANIFEST}"
  mk_log "closure of ${#TARGETS[@]} package(s): $(wc -l <"${MANIFEST}") .deb(s)"
}

# The .debs that are not in www yet (or differ) are fetched by apt-get
# download, which checks them against the index, then moved to their pool path.
step_download() {
  local rel size sha filename staging="${STATE}/download"
  local -a wanted=() moves=()
  rm -rf "${staging}"
  sandbox_dir "${staging}"
  while IFS=$'\t' read -r rel size sha filename; do
    if [[ "$(stat -c %s "${MK_WWW}/${rel}" 2>/dev/null)" == "${size}" ]] &&
      sha256sum -c --status <<<"${sha}  ${MK_WWW}/${rel}"; then
      continue
    fi
    wanted+=("${filename%%_*}")
    moves+=("${filename}"$'\t'"${rel}")
  done <"${MANIFEST}"
  if [[ ${#wanted[@]} -eq 0 ]]; then
    mk_log "all $(wc -l <"${MANIFEST}") .deb(s) present"
    return 0
  fi
  mk_log "downloading ${#wanted[@]} .deb(s)"
  (cd "${staging}" && query_apt apt-get -q download "${wanted[@]}") >&2
  local entry
  for entry in "${moves[@]}"; do
    rel="${entry#*$'\t'}"
    mkdir -p "$(dirname "${MK_WWW}/${rel}")"
    mv -f "${staging}/${entry%%$'\t'*}" "${MK_WWW}/${rel}"
    chmod 0644 "${MK_WWW}/${rel}"
    [[ ${EUID} -ne 0 ]] || chown 0:0 "${MK_WWW}/${rel}"
  done
  rm -rf "${staging}"
}

# publish_file SRC DEST: copy SRC to DEST in one rename.
publish_file() {
  mkdir -p "$(dirname "$2")"
  cp -f "$1" "$2.tmp"
  chmod 0644 "$2.tmp"
  mv -f "$2.tmp" "$2"
}

# SHA256 of PATH (relative to the suite) as InRelease lists it.
listed_sha256() {
  awk -v want="$2" '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == want { print $1; exit }' "$1"
}

# release_problem BASE INRELEASE DIR: fetch BASE's Release and Release.gpg
# into DIR; print what is wrong with them (nothing when Debian's key signs
# Release and Release says what INRELEASE says).
release_problem() {
  local base="$1" inrelease="$2" dir="$3" file
  for file in Release Release.gpg; do
    os_apt /usr/lib/apt/apt-helper -q download-file "${base}${file}" "${dir}/${file}" >/dev/null 2>&1 ||
      { echo "no ${file}"; return 0; }
  done
  gpgv --quiet --keyring "${KEYRING}" "${dir}/Release.gpg" "${dir}/Release" 2>/dev/null ||
    { echo "Release.gpg is no good signature of Release (gpgv: $(gpgv --keyring "${KEYRING}" \
      "${dir}/Release.gpg" "${dir}/Release" 2>&1 | grep -oE 'BAD signature|NO_PUBKEY|expired|no signature' | head -n 1))"; return 0; }
  gpgv --quiet --keyring "${KEYRING}" --output "${dir}/InRelease.text" "${inrelease}" 2>/dev/null &&
    cmp -s "${dir}/Release" "${dir}/InRelease.text" || echo "Release differs from InRelease"
}

# Packages and Translation files under their name and under by-hash, then
# Release and Release.gpg (when they match InRelease), InRelease last.
step_indexes() {
  local meta list base rel ext name sha dest entry inrelease problem
  local -a current=()
  # shellcheck disable=SC2016 # apt's format variables, not shell expansions
  while IFS='|' read -r meta list base; do
    [[ -s "${list}" ]] || continue # an optional target (Translation) the archive lacks
    name="${list##*/}"
    ext="${name##*_"${meta##*/}"}"
    inrelease="$(sed -E 's#_[^_]*_(binary-[^_]*|i18n)_[^_]*$#_InRelease#' <<<"${list}")"
    sha="$(listed_sha256 "${inrelease}" "${meta}${ext}")"
    [[ -n "${sha}" && "$(sha256sum <"${list}" | cut -d' ' -f1)" == "${sha}" ]] ||
      mk_die "${list} does not match the SHA256 its InRelease lists for ${meta}${ext}"
    rel="$(url_path "${base}")"
    dest="${MK_WWW}/${rel}${meta}${ext}"
    publish_file "${list}" "${dest}"
    mkdir -p "$(dirname "${dest}")/by-hash/SHA256"
    ln -sfn "../../${dest##*/}" "$(dirname "${dest}")/by-hash/SHA256/${sha}"
    current+=("$(dirname "${dest}")/by-hash/SHA256/${sha}")
    done < <(os_apt apt-get indextargets --format '$(METAKEY)|$(FILENAME)|$(BASE_URI)')
  # Drop by-hash entries that no current InRelease names.
  while IFS= read -r -d '' entry; do
    [[ " ${current[*]} " == *" ${entry} "* ]] || rm -f "${entry}"
  done < <(find "${MK_WWW}" -path '*/by-hash/SHA256/*' -type l -print0)
  local work="${STATE}/release"
  for entry in "${INRELEASES[@]}"; do
    base="${entry%%|*}"
    inrelease="${entry#*|}"
    rel="$(url_path "${base}")"
    rm -rf "${work}"
    sandbox_dir "${work}"
    problem="$(release_problem "${base}" "${inrelease}" "${work}")"
    if [[ -z "${problem}" ]]; then
      publish_file "${work}/Release" "${MK_WWW}/${rel}Release"
      publish_file "${work}/Release.gpg" "${MK_WWW}/${rel}Release.gpg"
    else
      mk_log "warning: ${base}: ${problem}; serving InRelease only (what apt asks for first)"
      rm -f "${MK_WWW}/${rel}Release" "${MK_WWW}/${rel}Release.gpg"
    fi
    publish_file "${inrelease}" "${MK_WWW}/${rel}InRelease"
  done
  rm -rf "${work}"
}

# .debs of earlier runs that the manifest no longer names.
step_prune() {
  local root rel removed=0
  declare -A keep=()
  while IFS=$'\t' read -r rel _; do
    keep["${rel}"]=1
  done <"${MANIFEST}"
  for root in "$(url_path "${DEBIAN_MIRROR}/")" "$(url_path "${DEBIAN_SECURITY_MIRROR}/")"; do
    [[ -d "${MK_WWW}/${root}pool" ]] || continue
    while IFS= read -r -d '' rel; do
      rel="${rel#"${MK_WWW}/"}"
      if [[ -z "${keep[${rel}]:-}" ]]; then
        rm -f "${MK_WWW}/${rel}"
        removed=$((removed + 1))
      fi
    done < <(find "${MK_WWW}/${root}pool" -type f -print0)
    find "${MK_WWW}/${root}pool" -mindepth 1 -type d -empty -delete
  done
  mk_log "removed ${removed} obsolete file(s)"
}

summary() {
  local bytes valid entry
  bytes="$(awk -F'\t' '{ s += $2 } END { print s + 0 }' "${MANIFEST}")"
  mk_log "$(wc -l <"${MANIFEST}") .deb(s), $((bytes / 1048576)) MiB; served from $(du -sh --dereference-args \
    "${MK_WWW}/$(url_path "${DEBIAN_MIRROR}/")" "${MK_WWW}/$(url_path "${DEBIAN_SECURITY_MIRROR}/")" |
    awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')"
  valid="$(for entry in "${INRELEASES[@]}"; do sed -n 's/^Valid-Until: //p' "${entry#*|}"; done |
    while read -r line; do date -u -d "${line}" +%Y-%m-%dT%H:%MZ; done | sort | head -n 1)"
  [[ -z "${valid}" ]] || mk_log "the mirror's index files expire at ${valid} (Valid-Until): rebuild before then"
}

mkdir -p "${STATE}"
exec 9>"${STATE}/.lock"
flock 9

mk_step "os-mirror: prepare" step_prepare
if [[ ${UPDATE} -eq 1 ]]; then
  mk_step "os-mirror: apt-get update" step_update
fi
find_inreleases
read_targets
KEY="$(stamp_key | sha256sum | cut -d' ' -f1)"
published=()
for entry in "${INRELEASES[@]}"; do
  published+=("${MK_WWW}/$(url_path "${entry%%|*}")InRelease")
done
if mk_stamp_ok os-mirror "${KEY}" "${published[@]}" && pool_complete; then
  mk_log "up to date ($(wc -l <"${MANIFEST}") .debs, key ${KEY:0:12})"
  exit 0
fi
rm -f "${MK_STAMPS}/os-mirror"
mk_step "os-mirror: query lists" step_query_lists
mk_step "os-mirror: resolve" step_resolve
mk_step "os-mirror: download" step_download
rm -rf "${STATE}/query"
mk_step "os-mirror: indexes" step_indexes
mk_step "os-mirror: prune" step_prune
mk_stamp_write os-mirror "${KEY}"
summary
