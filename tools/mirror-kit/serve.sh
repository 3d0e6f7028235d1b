#!/usr/bin/env bash
# Serve the offline mirror built by tools/mirror-kit/build-*.sh on ADDRESS:
#
#   http://ADDRESS:HTTP_PORT/       <out>/www (apt repositories; the manifests of flannel,
#                                   metrics-server, local-path-provisioner), python3 -m http.server
#   https://ADDRESS:REGISTRY_PORT/  the image registry (<out>/registry), TLS with a
#                                   certificate for ADDRESS signed by the kit CA
#                                   (<out>/pki/ca.crt; made here if missing)
#
# Both run in the background, PIDs in <out>/run/{http,registry}.pid, logs next
# to them; --stop stops them by those PIDs. On start, prints the stack config
# (kvm-kubeadm:mirrors) that points a stack at this mirror, and the CA path.
#
# Usage: tools/mirror-kit/serve.sh ADDRESS [--http-port N] [--registry-port N] [--out DIR]
#        tools/mirror-kit/serve.sh --stop [--out DIR]
#   defaults: --http-port 8080, --registry-port 5000, --out <repo>/.cache/mirror
set -euo pipefail

MK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${MK_DIR}/lib.sh"
# shellcheck source=SCRIPTDIR/images/serving.sh
source "${MK_DIR}/images/serving.sh"
# shellcheck source=SCRIPTDIR/../versions.env
source "${MK_DIR}/../versions.env"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi
mk_init serve "$@"

ADDRESS=""
HTTP_PORT=8080
REGISTRY_PORT=5000
STOP=0
set -- "${MK_ARGS[@]}"
while (($#)); do
  case "$1" in
    --stop) STOP=1 ;;
    --http-port)
      HTTP_PORT="${2:?--http-port needs a port}"
      shift
      ;;
    --registry-port)
      REGISTRY_PORT="${2:?--registry-port needs a port}"
      shift
      ;;
    -*)
      usage >&2
      exit 2
      ;;
    *)
      [[ -z "${ADDRESS}" ]] || mk_die "one ADDRESS only (got ${ADDRESS} and $1)"
      ADDRESS="$1"
      ;;
  esac
  shift
done

stop_all() {
  kit_stop http
  kit_stop registry
}

if ((STOP)); then
  stop_all
  exit 0
fi
[[ -n "${ADDRESS}" ]] || {
  usage >&2
  exit 2
}
for port in "${HTTP_PORT}" "${REGISTRY_PORT}"; do
  if [[ ! "${port}" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then mk_die "not a port: ${port}"; fi
done
[[ -d "${MK_OUT}/registry/docker/registry/v2/repositories" ]] \
  || mk_die "no images in ${MK_OUT}/registry: run tools/mirror-kit/build-images.sh first"
for name in http registry; do
  if pid="$(kit_pid "${name}")"; then
    mk_die "${name} already runs (PID ${pid}); stop it first: $0 --stop"
  fi
done

HOST="${ADDRESS}"
if [[ "${ADDRESS}" == *:* ]]; then HOST="[${ADDRESS}]"; fi

# Whatever fails from here on leaves nothing running.
trap 'rc=$?; if ((rc)); then stop_all; fi' EXIT
kit_registry_start "${ADDRESS}" "${REGISTRY_PORT}" registry
kit_spawn http python3 -m http.server --bind "${ADDRESS}" --directory "${MK_WWW}" "${HTTP_PORT}"
kit_wait_url http "http://${HOST}:${HTTP_PORT}/"
mk_log "http: http://${HOST}:${HTTP_PORT}/ (PID $(cat "${MK_OUT}/run/http.pid"), ${MK_WWW})"

HTTP="http://${HOST}:${HTTP_PORT}"
REG="${HOST}:${REGISTRY_PORT}"
# manifest_url NAME: where the mirror serves manifest NAME, {version} left for the program.
manifest_url() { kit_manifest "$1" && printf '%s/%s\n' "${HTTP}" "${MANIFEST_PATH}"; }
# Only fill-from-upstream.sh copies Headlamp's image (its Go backend is no module the proxy serves).
if [[ -f "$(kit_tag_link "headlamp-k8s/headlamp:${MIRROR_HEADLAMP_VERSION}")" ]]; then
  HEADLAMP="Headlamp ${MIRROR_HEADLAMP_VERSION}'s image too (filled from upstream)"
else
  HEADLAMP="no Headlamp image (fill-from-upstream.sh copies it): keep addons.headlamp false"
fi
cat <<EOF
# Stack config for this mirror (e.g. in Pulumi.<stack>.yaml, under config:).
# The mirror holds Kubernetes ${MIRROR_KUBE_VERSION}, flannel ${MIRROR_FLANNEL_VERSION}, metrics-server
# ${MIRROR_METRICS_SERVER_VERSION} and local-path-provisioner ${MIRROR_LOCAL_PATH_VERSION}, the program's defaults, and,
# to upgrade from, Kubernetes ${MIRROR_KUBE_UPGRADE_FROM:-none}: a stack's kubernetes.version must be one
# of these, its flannel.version and addons versions the defaults; ${HEADLAMP}.
  kvm-kubeadm:mirrors:
    kubePackages: ${HTTP}/kubernetes
    imageRepository: ${REG}
    flannelManifest: $(manifest_url flannel)
    flannelRegistry: ${REG}/flannel-io
    metricsServerManifest: $(manifest_url metrics-server)
    localPathManifest: $(manifest_url local-path)
    osApt: ${HTTP}
    containerdPackages: ${HTTP}/docker
  # The nodes trust the kit CA for this registry (certs.d/<host>/hosts.toml),
  # and pull docker.io's and ghcr.io's images from it by their own names.
  kvm-kubeadm:registries:
    "${REG}":
      caFile: ${MK_OUT}/pki/ca.crt
    docker.io:
      mirrors: ["https://${REG}"]
    ghcr.io:
      mirrors: ["https://${REG}"]
# The registry's CA (nodes trust it through /etc/containerd/certs.d/${REG}/hosts.toml):
#   ${MK_OUT}/pki/ca.crt
# Stop: $0 --stop$(if [[ "${MK_OUT}" != "${MK_ROOT}/.cache/mirror" ]]; then printf ' --out %s' "${MK_OUT}"; fi)
EOF
