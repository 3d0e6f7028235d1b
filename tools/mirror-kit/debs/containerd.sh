# shellcheck shell=bash
# debs/containerd.sh: Docker's containerd.io package for Debian, built from Go
# modules:
#
#   containerd_debs OUTDIR   containerd.io <MIRROR_CONTAINERD_VERSION>-<rev>~<distro>.<id>~<suite>
#
# What github.com/docker/packaging pkg/containerd/deb/rules installs:
# /usr/bin/{containerd,containerd-shim-runc-v2,ctr} (containerd's `make
# binaries`, without containerd-stress), /usr/bin/runc (runc's `make runc`),
# /lib/systemd/system/containerd.service (containerd's own unit with
# /usr/local/bin changed to /usr/bin, as its pkg-deb-build.sh does) and
# /etc/containerd/config.toml (debs/containerd.io/config.toml). Docker also
# ships man pages (made with go-md2man); this package has none.
# Uses lib.sh, debs/common.sh and module_info from tools/toolchain/kube-tools.sh.

containerd_debs() {
  local outdir="$1" version="${MIRROR_CONTAINERD_VERSION}" runc="${MIRROR_RUNC_VERSION}"
  local mod=github.com/containerd/containerd/v2
  local debver="${version#v}-${MIRROR_CONTAINERD_DEB_REVISION}~${MIRROR_DOCKER_DISTRO}.${MIRROR_DOCKER_DISTRO_ID}~${MIRROR_DOCKER_SUITE}"
  local work="${MK_BUILD}/containerd.io-${version}" moddir pinned epoch depends got
  moddir="$(module_info "${mod}@${version}" Dir)"
  # Docker builds the runc that containerd pins (pkg/containerd/Dockerfile:
  # RUNC_REF defaults to script/setup/runc-version).
  pinned="$(cat "${moddir}/script/setup/runc-version")"
  [[ "${pinned}" == "${runc}" ]] || {
    mk_log "containerd ${version} pins runc ${pinned}; set MIRROR_RUNC_VERSION=${pinned} in tools/versions.env"
    return 1
  }
  rm -rf "${work}"
  # containerd's Makefile flags, with VERSION and PACKAGE as Docker passes
  # them (`containerd --version`: "containerd containerd.io v2.x.y"). The
  # module zip has no git metadata, so the revision stays empty. Static, as
  # its STATIC=1 build (Docker's links libc; CGO only adds the btrfs
  # snapshotter, which Docker's rpm build disables too).
  local ldflags="-s -w -X ${mod}/version.Version=${version} -X ${mod}/version.Package=containerd.io -extldflags -static"
  local tags="urfave_cli_no_docs osusergo netgo static_build"
  CGO_ENABLED=0 mk_step "containerd.io: go install containerd ctr" go_install_into "${work}/bin" \
    -tags "${tags}" -ldflags "${ldflags}" "${mod}/cmd/containerd@${version}" "${mod}/cmd/ctr@${version}"
  CGO_ENABLED=0 mk_step "containerd.io: go install containerd-shim-runc-v2" go_install_into "${work}/bin" \
    -tags "${tags} no_grpc" -ldflags "${ldflags}" "${mod}/cmd/containerd-shim-runc-v2@${version}"
  # runc's Makefile: cgo with libseccomp (Debian's libseccomp-dev), PIE.
  CGO_ENABLED=1 mk_step "containerd.io: go install runc" go_install_into "${work}/bin" \
    -buildmode=pie -tags "seccomp urfave_cli_no_docs" -ldflags "-s -w" "github.com/opencontainers/runc@${runc}"

  got="$("${work}/bin/containerd" --version)"
  [[ "${got}" == "containerd containerd.io ${version}"* ]] || { mk_log "containerd --version: '${got}'"; return 1; }
  got="$("${work}/bin/runc" --version)"
  [[ "${got}" == "runc version ${runc#v}"* && "${got}" == *"libseccomp: "* ]] || { mk_log "runc --version: '${got}'"; return 1; }
  depends="$(deb_shlibs_depends "${work}/bin/runc")"
  epoch="$(module_epoch "${mod}@${version}")"

  local root="${work}/root" bin
  install -d "${root}/usr/bin"
  for bin in containerd containerd-shim-runc-v2 ctr runc; do
    install -m 0755 "${work}/bin/${bin}" "${root}/usr/bin/${bin}"
  done
  install -d "${root}/lib/systemd/system" "${root}/etc/containerd"
  sed 's#/usr/local/bin/containerd#/usr/bin/containerd#g' "${moddir}/containerd.service" \
    >"${root}/lib/systemd/system/containerd.service"
  install -m 0644 "${DEBS_DIR}/containerd.io/config.toml" "${root}/etc/containerd/config.toml"
  deb_pack containerd.io "${root}" "${outdir}" "VERSION=${debver}" "EPOCH=${epoch}" \
    UNIT=containerd.service START=restart "SHLIBS_DEPENDS=${depends}"
  rm -rf "${root}"
}
