# shellcheck shell=bash
# debs/kubernetes.sh: the packages of pkgs.k8s.io's v<MAJOR.MINOR> repository
# that a kubeadm node installs, built from Go modules:
#
#   kube_debs VERSION OUTDIR  kubeadm, kubelet, kubectl <VERSION>-<MIRROR_KUBE_DEB_REVISION>
#                             (build-debs.sh: MIRROR_KUBE_VERSION and each MIRROR_KUBE_UPGRADE_FROM)
#   cni_debs OUTDIR           kubernetes-cni <MIRROR_CNI_VERSION>-<MIRROR_CNI_DEB_REVISION>
#
# Files and layout follow k8s.io/release cmd/krel/templates/latest/<package>/
# <package>.spec for debbuild (the "%if debbuild" branches); the unit file,
# the kubeadm drop-in, /etc/default/kubelet and the documentation are taken
# from that module (MIRROR_KUBE_RELEASE_MODULE_VERSION).
# Uses lib.sh, debs/common.sh and tools/toolchain/kube-tools.sh.

# kube_templates: the directory of the packaging templates in the k8s.io/release module.
kube_templates() {
  local dir
  dir="$(module_info "k8s.io/release@${MIRROR_KUBE_RELEASE_MODULE_VERSION}" Dir)"
  [[ -d "${dir}/cmd/krel/templates/latest" ]] || { mk_log "no packaging templates in k8s.io/release@${MIRROR_KUBE_RELEASE_MODULE_VERSION}"; return 1; }
  printf '%s\n' "${dir}/cmd/krel/templates/latest"
}

# kube_check_versions BINDIR VERSION: each binary reports VERSION.
kube_check_versions() {
  local bin="$1" version="$2" got
  got="$("${bin}/kubeadm" version -o short)"
  [[ "${got}" == "${version}" ]] || { mk_log "kubeadm version -o short: '${got}', expected ${version}"; return 1; }
  got="$("${bin}/kubelet" --version)"
  [[ "${got}" == "Kubernetes ${version}" ]] || { mk_log "kubelet --version: '${got}', expected Kubernetes ${version}"; return 1; }
  got="$("${bin}/kubectl" version --client -o json)"
  [[ "${got}" == *"\"gitVersion\": \"${version}\""* ]] || { mk_log "kubectl version --client: no gitVersion ${version}"; return 1; }
}

kube_debs() {
  local version="$1" outdir="$2"
  local debver="${version#v}-${MIRROR_KUBE_DEB_REVISION}"
  local work="${MK_BUILD}/kubernetes-${version}"
  local bin="${work}/bin" templates epoch cmd
  local -a pkgs=()
  for cmd in kubeadm kubelet kubectl; do pkgs+=("k8s.io/kubernetes/cmd/${cmd}"); done
  # One wrapper module and one go build for the three: they share most
  # packages. All three are static (CGO_ENABLED=0); upstream links kubelet
  # with cgo (it is not in hack/lib/golang.sh's KUBE_STATIC_BINARIES), which
  # would mean a second build of nearly everything.
  mk_step "kubernetes ${version}: wrapper module" kube_wrapper_module "${work}/module" "${version}" kvm-kubeadm-mirror-debs "${pkgs[@]}"
  rm -rf "${bin}"
  mkdir -p "${bin}"
  KUBE_TOOLS_NICE=10 mk_step "kubernetes ${version}: go build kubeadm kubelet kubectl" \
    kube_go_build "${work}/module" "${version}" "${bin}/" "${pkgs[@]}"
  kube_check_versions "${bin}" "${version}"
  templates="$(kube_templates)"
  epoch="$(module_epoch "k8s.io/kubernetes@${version}")"

  local root="${work}/root"
  rm -rf "${root}"
  # kubeadm: the binary and the kubelet drop-in that runs kubelet with the
  # files kubeadm writes (debbuild edits /etc/sysconfig to /etc/default).
  install -D -m 0755 "${bin}/kubeadm" "${root}/kubeadm/usr/bin/kubeadm"
  install -d "${root}/kubeadm/usr/lib/systemd/system/kubelet.service.d"
  sed 's;/etc/sysconfig/kubelet;/etc/default/kubelet;g' "${templates}/kubeadm/10-kubeadm.conf" \
    >"${root}/kubeadm/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
  deb_docs "${root}/kubeadm" kubeadm "${templates}/kubeadm"
  deb_pack kubeadm "${root}/kubeadm" "${outdir}" "VERSION=${debver}" "EPOCH=${epoch}"

  # kubelet: the binary, its unit, /etc/default/kubelet (a conffile) and the
  # .kubelet-keep files that keep /var/lib/kubelet and /etc/kubernetes/manifests.
  install -D -m 0755 "${bin}/kubelet" "${root}/kubelet/usr/bin/kubelet"
  install -D -m 0644 "${templates}/kubelet/kubelet.service" "${root}/kubelet/usr/lib/systemd/system/kubelet.service"
  install -D -m 0644 "${templates}/kubelet/kubelet.env" "${root}/kubelet/etc/default/kubelet"
  install -d "${root}/kubelet/var/lib/kubelet" "${root}/kubelet/etc/kubernetes/manifests"
  : >"${root}/kubelet/var/lib/kubelet/.kubelet-keep"
  : >"${root}/kubelet/etc/kubernetes/manifests/.kubelet-keep"
  deb_docs "${root}/kubelet" kubelet "${templates}/kubelet"
  deb_pack kubelet "${root}/kubelet" "${outdir}" "VERSION=${debver}" "EPOCH=${epoch}" UNIT=kubelet.service

  install -D -m 0755 "${bin}/kubectl" "${root}/kubectl/usr/bin/kubectl"
  deb_docs "${root}/kubectl" kubectl "${templates}/kubectl"
  deb_pack kubectl "${root}/kubectl" "${outdir}" "VERSION=${debver}" "EPOCH=${epoch}"
  rm -rf "${root}"
}

# cni_debs OUTDIR: kubernetes-cni, the CNI plugins release archive
# (cni-plugins-linux-<arch>-<version>.tgz) unpacked into /opt/cni/bin. The
# plugins are the ones its build_linux.sh builds (plugins/{meta,main,ipam}/*
# but windows), static and with the release's BuildVersion.
cni_debs() {
  local outdir="$1" version="${MIRROR_CNI_VERSION}"
  local mod=github.com/containernetworking/plugins
  local debver="${version#v}-${MIRROR_CNI_DEB_REVISION}"
  local work="${MK_BUILD}/kubernetes-cni-${version}" moddir templates epoch dir
  local -a pkgs=()
  moddir="$(module_info "${mod}@${version}" Dir)"
  for dir in "${moddir}"/plugins/meta/*/ "${moddir}"/plugins/main/*/ "${moddir}"/plugins/ipam/*/; do
    dir="${dir%/}"
    [[ "${dir##*/}" != windows ]] || continue
    pkgs+=("${mod}/${dir#"${moddir}/"}@${version}")
  done
  rm -rf "${work}"
  CGO_ENABLED=0 mk_step "kubernetes-cni: go install ${#pkgs[@]} plugins" go_install_into "${work}/bin" \
    -ldflags "-s -w -extldflags -static -X ${mod}/pkg/utils/buildversion.BuildVersion=${version}" "${pkgs[@]}"
  local about
  about="$("${work}/bin/loopback" 2>&1 || true)"
  [[ "${about}" == *"plugin ${version}"* ]] || { mk_log "loopback does not report ${version}: ${about}"; return 1; }
  templates="$(kube_templates)"
  epoch="$(module_epoch "${mod}@${version}")"

  local root="${work}/root"
  install -d "${root}/opt/cni/bin" "${root}/etc/cni/net.d"
  install -m 0755 "${work}/bin"/* "${root}/opt/cni/bin/"
  install -m 0644 "${moddir}/LICENSE" "${moddir}/README.md" "${root}/opt/cni/bin/"
  : >"${root}/etc/cni/net.d/.kubernetes-cni-keep"
  deb_docs "${root}" kubernetes-cni "${templates}/kubernetes-cni"
  deb_pack kubernetes-cni "${root}" "${outdir}" "VERSION=${debver}" "EPOCH=${epoch}"
  rm -rf "${root}"
}
