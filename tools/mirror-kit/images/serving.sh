# shellcheck shell=bash
# serving.sh: the kit tools, the CA, the registry and the daemons of the image
# half of the mirror kit; sourced by tools/mirror-kit/build-images.sh, serve.sh
# and fill-from-upstream.sh after tools/mirror-kit/lib.sh (mk_init sets MK_OUT;
# logging is lib.sh's mk_log).
#
#   kit_go_install DIR PKG@VERSION LDFLAGS [TAGS]
#                               go install a released main package into DIR
#   kit_build_tools NAME...     the kit tools (registry, crane, ctr) in ${MK_OUT}/bin,
#                               each built from its pinned Go module unless stamped
#   kit_kube_image_refs VERSION the images tools/versions.env pins for kube VERSION,
#                               as `kubeadm config images list` names them
#   kit_manifest NAME           where the kit serves manifest NAME (flannel, metrics-server,
#                               local-path) and which images it must name
#   kit_manifest_images FILE    the images FILE names, checked against that list
#   kit_pin_manifest NAME SRC FROM
#                               SRC (from FROM) becomes the kit's copy of manifest NAME
#   kit_ensure_ca               the kit CA, made once: ${MK_OUT}/pki/ca.{crt,key}
#   kit_server_cert ADDRESS     a server certificate for ADDRESS (IP or DNS SAN)
#                               signed by that CA; prints the .crt path
#   kit_spawn NAME CMD...       a daemon in its own session; PID in ${MK_OUT}/run/NAME.pid,
#                               output in ${MK_OUT}/run/NAME.log
#   kit_pid NAME / kit_stop NAME
#                               its PID if it runs / stop it by that PID
#   kit_wait_url NAME URL [CURL-ARGS...]
#                               wait until URL answers (or NAME died)
#   kit_registry_start ADDR PORT NAME
#                               the registry (distribution) over TLS on ADDR:PORT,
#                               storage ${MK_OUT}/registry
#   kit_tag_link PATH:TAG       the storage's file that holds the tag's manifest digest
#   kit_free_port               a free TCP port on 127.0.0.1

# ---------------------------------------------------------------------------
# kit tools, and the images kubeadm asks for
# ---------------------------------------------------------------------------
# The kube commands that are images of their own, tagged with each kube version
# of the kit (lib.sh mk_kube_versions).
KIT_KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)

# kit_go_install DIR PKG@VERSION LDFLAGS [TAGS]: build a main package of a
# released module as released (its own go.mod and go.sum) into DIR: module-aware,
# no toolchain switch, no VCS stamping, one package at a time and niced.
# CGO_ENABLED comes from the caller (default 0).
kit_go_install() {
  local dir="$1" target="$2" ldflags="$3" tags="${4:-}"
  mkdir -p "${dir}"
  (
    cd "${dir}" || exit 1
    GO111MODULE=on GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off \
      CGO_ENABLED="${CGO_ENABLED:-0}" GOBIN="${dir}" nice -n 10 go install -p 1 -trimpath \
      -tags "${tags}" -ldflags "${ldflags}" "${target}"
  )
}

# kit_go_tool NAME KEY PKG@VERSION LDFLAGS [TAGS]: ${MK_OUT}/bin/NAME, built
# unless the stamp images-tool-NAME holds KEY.
kit_go_tool() {
  local name="$1" key="$2" target="$3" ldflags="$4" tags="${5:-}" bin="${MK_OUT}/bin"
  if mk_stamp_ok "images-tool-${name}" "${key}" "${bin}/${name}"; then
    mk_log "${name}: up to date"
    return 0
  fi
  mk_log "${name}: building ${target}"
  local tmp="${MK_BUILD}/images/gobin/${name}"
  rm -rf "${tmp}"
  kit_go_install "${tmp}" "${target}" "${ldflags}" "${tags}"
  mkdir -p "${bin}"
  mv -f "${tmp}/$(basename "${target%@*}")" "${bin}/${name}"
  rm -rf "${tmp}"
  mk_stamp_write "images-tool-${name}" "${key}"
}

# kit_build_tools NAME...: the kit tools NAME (registry, crane, ctr) at their
# pinned versions (tools/versions.env), keyed by that version and Go's.
kit_build_tools() {
  local name go dist=github.com/distribution/distribution/v3 ctrd=github.com/containerd/containerd/v2
  command -v go >/dev/null || mk_die "go not found on PATH (need >= ${GO_MIN_VERSION}): it builds the kit tools"
  go="$(go env GOVERSION)"
  for name in "$@"; do
    case "${name}" in
      registry)
        kit_go_tool registry "${MIRROR_DISTRIBUTION_VERSION} ${go}" \
          "${dist}/cmd/registry@${MIRROR_DISTRIBUTION_VERSION}" \
          "-s -w -X ${dist}/version.version=${MIRROR_DISTRIBUTION_VERSION} -X ${dist}/version.mainpkg=${dist}"
        ;;
      crane)
        kit_go_tool crane "${MIRROR_CRANE_VERSION} ${go}" \
          "github.com/google/go-containerregistry/cmd/crane@${MIRROR_CRANE_VERSION}" "-s -w"
        ;;
      ctr)
        # The pull client of tests/mirror (as containerd's static build).
        kit_go_tool ctr "${CONTAINERD2_VERSION} ${go}" "${ctrd}/cmd/ctr@${CONTAINERD2_VERSION}" \
          "-s -w -X ${ctrd}/version.Version=${CONTAINERD2_VERSION} -X ${ctrd}/version.Package=${ctrd}" \
          "urfave_cli_no_docs osusergo netgo static_build"
        ;;
      *) mk_die "unknown kit tool ${name} (registry, crane, ctr)" ;;
    esac
  done
}

# kit_kube_image_refs VERSION: the images of kube VERSION under registry.k8s.io,
# one a line, as tools/versions.env pins them (etcd, coredns and pause: one each
# for every version).
kit_kube_image_refs() {
  local c
  for c in "${KIT_KUBE_CMDS[@]}"; do printf 'registry.k8s.io/%s:%s\n' "${c}" "$1"; done
  printf 'registry.k8s.io/coredns/coredns:%s\n' "${MIRROR_COREDNS_VERSION}"
  printf 'registry.k8s.io/pause:%s\n' "${MIRROR_PAUSE_VERSION}"
  printf 'registry.k8s.io/etcd:%s\n' "${MIRROR_ETCD_IMAGE_TAG}"
}

# ---------------------------------------------------------------------------
# the manifests the kit serves, pinned to their release (www/<project>/<version>/)
# ---------------------------------------------------------------------------
# kit_manifest NAME: sets MANIFEST_VERSION (its pinned release), MANIFEST_PATH
# (under www/, {version} standing for the release: serve.sh prints it for the
# program's mirrors.*Manifest), MANIFEST_FILE (the pinned copy) and
# MANIFEST_IMAGES (glob patterns: the images it names, one each, and no others).
kit_manifest() {
  case "$1" in
    flannel)
      MANIFEST_VERSION="${MIRROR_FLANNEL_VERSION}"
      MANIFEST_PATH='flannel/{version}/kube-flannel.yml'
      MANIFEST_IMAGES=("ghcr.io/flannel-io/flannel:${MANIFEST_VERSION}" 'ghcr.io/flannel-io/flannel-cni-plugin:*')
      ;;
    metrics-server)
      MANIFEST_VERSION="${MIRROR_METRICS_SERVER_VERSION}"
      MANIFEST_PATH='metrics-server/{version}/components.yaml'
      MANIFEST_IMAGES=("registry.k8s.io/metrics-server/metrics-server:${MANIFEST_VERSION}")
      ;;
    local-path)
      MANIFEST_VERSION="${MIRROR_LOCAL_PATH_VERSION}"
      MANIFEST_PATH='local-path-provisioner/{version}/local-path-storage.yaml'
      # busybox: the helper pod's, which the program replaces by the provisioner's image.
      MANIFEST_IMAGES=("rancher/local-path-provisioner:${MANIFEST_VERSION}" busybox)
      ;;
    *) mk_die "unknown manifest $1 (flannel, metrics-server, local-path)" ;;
  esac
  local placeholder='{version}'
  MANIFEST_FILE="${MK_OUT}/www/${MANIFEST_PATH//"${placeholder}"/${MANIFEST_VERSION}}"
}

# kit_manifest_images FILE: the images FILE names (every `image:` line, those
# of a Pod template inside a ConfigMap too), one a line; dies unless each
# pattern of the last kit_manifest's MANIFEST_IMAGES matches exactly one of them
# and each of them one pattern.
kit_manifest_images() {
  local images image pattern
  local -A matched=()
  images="$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$1" | LC_ALL=C sort -u)"
  while read -r image; do
    for pattern in "${MANIFEST_IMAGES[@]}"; do
      # shellcheck disable=SC2053 # the pattern is a glob
      if [[ -n "${image}" && "${image}" == ${pattern} ]]; then
        matched[${pattern}]+=x
        continue 2
      fi
    done
    mk_die "$1 names ${images//$'\n'/ }, not ${MANIFEST_IMAGES[*]}"
  done <<<"${images}"
  for pattern in "${MANIFEST_IMAGES[@]}"; do
    [[ "${matched[${pattern}]:-}" == x ]] || mk_die "$1 names ${images//$'\n'/ }, not ${MANIFEST_IMAGES[*]}"
  done
  printf '%s\n' "${images}"
}

# kit_pin_manifest NAME SRC FROM: the kit's copy of manifest NAME becomes SRC
# (which must name its images); FROM says where SRC came from.
kit_pin_manifest() {
  kit_manifest "$1"
  kit_manifest_images "$2" >/dev/null
  if cmp -s "$2" "${MANIFEST_FILE}"; then
    mk_log "${MANIFEST_FILE#"${MK_OUT}/"}: up to date"
    return 0
  fi
  install -D -m 0644 "$2" "${MANIFEST_FILE}"
  mk_log "${MANIFEST_FILE#"${MK_OUT}/"}: copied from ${3}"
}

# ---------------------------------------------------------------------------
# PKI: one CA per mirror directory; server certificates per address
# ---------------------------------------------------------------------------
kit_ensure_ca() {
  local pki="${MK_OUT}/pki"
  if [[ -s "${pki}/ca.crt" && -s "${pki}/ca.key" ]]; then
    return 0
  fi
  command -v openssl >/dev/null || mk_die "openssl not found (apt-get install openssl)"
  mkdir -p "${pki}"
  mk_log "making the kit CA ${pki}/ca.crt"
  # -config /dev/null: no extensions from the system openssl.cnf; exactly these.
  (umask 077 && openssl req -x509 -new -nodes -config /dev/null -days 3650 \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "${pki}/ca.key.tmp" \
    -subj "/CN=kvm-kubeadm mirror kit CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "${pki}/ca.crt.tmp" 2>/dev/null)
  mv -f "${pki}/ca.key.tmp" "${pki}/ca.key"
  chmod 0644 "${pki}/ca.crt.tmp"
  mv -f "${pki}/ca.crt.tmp" "${pki}/ca.crt"
}

# kit_server_cert ADDRESS: make (once per CA) ${MK_OUT}/pki/servers/ADDRESS.{crt,key},
# with ADDRESS as IP SAN (or DNS SAN for a name); prints the .crt path.
kit_server_cert() {
  local addr="$1" dir="${MK_OUT}/pki/servers" san
  local crt="${dir}/${addr}.crt" key="${dir}/${addr}.key"
  kit_ensure_ca
  if [[ -s "${crt}" && -s "${key}" ]] \
    && openssl verify -CAfile "${MK_OUT}/pki/ca.crt" "${crt}" >/dev/null 2>&1 \
    && openssl x509 -in "${crt}" -noout -checkend 604800 >/dev/null; then
    printf '%s\n' "${crt}"
    return 0
  fi
  if [[ "${addr}" =~ ^[0-9.]+$ || "${addr}" == *:* ]]; then san="IP:${addr}"; else san="DNS:${addr}"; fi
  mkdir -p "${dir}"
  (umask 077 && openssl req -new -nodes -config /dev/null -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "${key}" -subj "/CN=${addr}" 2>/dev/null) \
    | openssl x509 -req -CA "${MK_OUT}/pki/ca.crt" -CAkey "${MK_OUT}/pki/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 825 -out "${crt}" \
      -extfile <(printf '%s\n' "subjectAltName=${san}" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
        "authorityKeyIdentifier=keyid") 2>/dev/null
  printf '%s\n' "${crt}"
}

# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------
kit_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# kit_spawn NAME CMD...: start CMD in the background in its own session, with
# output to ${MK_OUT}/run/NAME.log, and record its PID in ${MK_OUT}/run/NAME.pid.
kit_spawn() {
  local name="$1" run="${MK_OUT}/run"
  shift
  mkdir -p "${run}"
  setsid "$@" >"${run}/${name}.log" 2>&1 </dev/null &
  printf '%s\n' "$!" >"${run}/${name}.pid"
}

# kit_pid NAME: the PID recorded for NAME if that process is still running.
kit_pid() {
  local file="${MK_OUT}/run/$1.pid" pid
  [[ -s "${file}" ]] || return 1
  pid="$(cat "${file}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null || return 1
  printf '%s\n' "${pid}"
}

# kit_stop NAME: stop the process recorded in ${MK_OUT}/run/NAME.pid (TERM,
# then KILL after 10 s) and remove the PID file.
kit_stop() {
  local name="$1" pid i
  if pid="$(kit_pid "${name}")"; then
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      mk_log "${name} (PID ${pid}) did not stop on TERM: KILL"
      kill -KILL "${pid}" 2>/dev/null || true
    fi
    mk_log "stopped ${name} (PID ${pid})"
  fi
  rm -f "${MK_OUT}/run/${name}.pid"
}

# kit_wait_url NAME URL [CURL-ARGS...]: wait up to 30 s until URL answers;
# fails early (with the log's tail) if process NAME has died.
kit_wait_url() {
  local name="$1" url="$2" i
  shift 2
  for ((i = 0; i < 300; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$@" "${url}" 2>/dev/null; then
      return 0
    fi
    if ! kit_pid "${name}" >/dev/null; then
      tail -n 20 "${MK_OUT}/run/${name}.log" >&2 || true
      mk_die "${name} exited before ${url} answered"
    fi
    sleep 0.1
  done
  tail -n 20 "${MK_OUT}/run/${name}.log" >&2 || true
  mk_die "${url} did not answer within 30 s"
}

# ---------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------
# kit_registry_config FILE ADDR PORT: a distribution config serving
# ${MK_OUT}/registry over TLS on ADDR:PORT with a certificate for ADDR.
kit_registry_config() {
  local file="$1" addr="$2" port="$3" crt
  crt="$(kit_server_cert "${addr}")"
  mkdir -p "$(dirname "${file}")" "${MK_OUT}/registry"
  local host="${addr}"
  if [[ "${addr}" == *:* ]]; then host="[${addr}]"; fi
  cat >"${file}" <<EOF
# written by tools/mirror-kit (kit.sh kit_registry_config)
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: ${MK_OUT}/registry
  cache:
    blobdescriptor: inmemory
  redirect:
    disable: true
http:
  addr: ${host}:${port}
  # One instance: any secret will do (without one the registry warns and makes one up).
  secret: $(openssl rand -hex 16)
  tls:
    certificate: ${crt}
    key: ${crt%.crt}.key
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

# kit_tag_link PATH:TAG: the file of the registry storage that holds the digest
# of the manifest PATH:TAG names (missing while the tag is not there).
kit_tag_link() {
  printf '%s/registry/docker/registry/v2/repositories/%s/_manifests/tags/%s/current/link\n' "${MK_OUT}" "${1%:*}" "${1##*:}"
}

# kit_registry_start ADDR PORT NAME: serve the registry on ADDR:PORT (TLS);
# returns when /v2/ answers with the kit CA.
kit_registry_start() {
  local addr="$1" port="$2" name="$3" cfg host="$1" bin="${MK_OUT}/bin/registry"
  [[ -x "${bin}" ]] || mk_die "${bin} missing: run tools/mirror-kit/build-images.sh"
  cfg="${MK_OUT}/run/${name}.yml"
  kit_registry_config "${cfg}" "${addr}" "${port}"
  if [[ "${addr}" == *:* ]]; then host="[${addr}]"; fi
  # No trace exporter: the registry would otherwise send spans to an OTLP
  # collector on localhost:4318.
  OTEL_TRACES_EXPORTER=none kit_spawn "${name}" "${bin}" serve "${cfg}"
  kit_wait_url "${name}" "https://${host}:${port}/v2/" --cacert "${MK_OUT}/pki/ca.crt"
  mk_log "${name}: https://${host}:${port} (PID $(cat "${MK_OUT}/run/${name}.pid"), storage ${MK_OUT}/registry)"
}
