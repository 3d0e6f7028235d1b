#!/usr/bin/env bash
# Build the Pulumi toolchain of this project from the Go module proxy into
# .toolchain/ (git-ignored):
#
#   .toolchain/bin/          pulumi, pulumi-language-python(+ -exec),
#                            pulumi-resource-pulumi-python (put on PATH by
#                            tools/toolchain-env.sh)
#   .toolchain/providers/    pulumi-resource-command, pulumi-resource-libvirt
#                            kubeadm, containerd2, containerd2-latest, containerd1
#                            (the real tools the `tools` tests run)
#   .toolchain/pulumi-home/  PULUMI_HOME with those providers installed in its
#                            plugin cache (no downloads needed)
#   .toolchain/build/        generated wrapper modules, one per component
#   .toolchain/stamps/       one stamp per component, keyed by its versions
#   .toolchain/logs/         build logs
#
# Usage: tools/build-toolchain.sh [--force] [COMPONENT...]
#   With no COMPONENT, builds all of them in order (see COMPONENTS below).
#   A component whose stamp matches its pinned versions is skipped.
#   --force ignores the stamps.
#
# Versions are pinned in tools/versions.env. Go's module and build caches stay
# at their default locations so rebuilds are fast.
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "${TOOLS_DIR}/.." && pwd)"
TC_DIR="${ROOT_DIR}/.toolchain"
BIN_DIR="${TC_DIR}/bin"
BUILD_DIR="${TC_DIR}/build"
STAMP_DIR="${TC_DIR}/stamps"
LOG_DIR="${TC_DIR}/logs"
PROVIDER_DIR="${TC_DIR}/providers"
PULUMI_HOME_DIR="${TC_DIR}/pulumi-home"

# shellcheck source-path=SCRIPTDIR source=versions.env
source "${TOOLS_DIR}/versions.env"
# shellcheck source=SCRIPTDIR/toolchain/kube-tools.sh
source "${TOOLS_DIR}/toolchain/kube-tools.sh"

FORCE=0
GO_BUILD_FLAGS=(-p 2 -trimpath)

# Go settings: module-aware, no VCS stamping, never switch toolchains behind
# our back, and let the generated wrapper modules update their go.sum.
export GO111MODULE=on
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
log() { printf '[build-toolchain] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# sha256 of the given files (and files under given directories), sorted by path.
hash_paths() {
    local p
    for p in "$@"; do
        if [[ -d "${p}" ]]; then
            find "${p}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        else
            sha256sum "${p}"
        fi
    done | sed "s#${ROOT_DIR}/##" | sha256sum | cut -d' ' -f1
}

# stamp_ok NAME KEY FILE...: true if the stamp of NAME holds KEY and every FILE exists.
stamp_ok() {
    local name="$1" key="$2" f
    shift 2
    [[ "${FORCE}" == 1 ]] && return 1
    [[ -f "${STAMP_DIR}/${name}" ]] || return 1
    [[ "$(cat "${STAMP_DIR}/${name}")" == "${key}" ]] || return 1
    for f in "$@"; do
        [[ -e "${f}" ]] || return 1
    done
    return 0
}

stamp_write() {
    mkdir -p "${STAMP_DIR}"
    printf '%s\n' "$2" >"${STAMP_DIR}/$1"
    BUILT=1
}

# timed NAME CMD...: run CMD; if it built something (stamp_write sets BUILT),
# log its wall time to logs/times.log.
BUILT=0
timed() {
    local name="$1" start end
    shift
    BUILT=0
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    if [[ "${BUILT}" == 1 ]]; then
        mkdir -p "${LOG_DIR}"
        printf '%s %s %ss\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${name}" "$((end - start))" >>"${LOG_DIR}/times.log"
        log "${name}: built in $((end - start))s"
    fi
}

check_go() {
    command -v go >/dev/null || die "go not found on PATH (need >= ${GO_MIN_VERSION})"
    local have
    have="$(go env GOVERSION)"
    have="${have#go}"
    if [[ "$(printf '%s\n%s\n' "${GO_MIN_VERSION}" "${have}" | sort -V | head -n1)" != "${GO_MIN_VERSION}" ]]; then
        die "go ${have} is older than ${GO_MIN_VERSION}"
    fi
}

# fresh_module NAME [SRC]: an empty build dir for component NAME (with SRC's Go
# files copied in, if given); prints its path.
fresh_module() {
    local dir="${BUILD_DIR}/$1"
    rm -rf "${dir}"
    mkdir -p "${dir}" "${BIN_DIR}" "${PROVIDER_DIR}"
    if [[ -n "${2:-}" ]]; then
        cp "$2"/*.go "${dir}/"
    fi
    printf '%s\n' "${dir}"
}

# go_build DIR OUT PKG [LDFLAGS]: build PKG inside module DIR into OUT.
go_build() {
    local dir="$1" out="$2" pkg="$3" ldflags="${4:-}"
    (cd "${dir}" && go build "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w ${ldflags}" -o "${out}.tmp" "${pkg}")
    mv -f "${out}.tmp" "${out}"
}

# ---------------------------------------------------------------------------
# component: pulumi-cli
# ---------------------------------------------------------------------------
pulumi_cli_key() {
    printf 'pulumi=%s clipboard=%s@%s' "${PULUMI_VERSION}" \
        "${PULUMI_CLIPBOARD_REPLACE_MODULE}" "${PULUMI_CLIPBOARD_REPLACE_VERSION}"
}

build_pulumi_cli() {
    local key dir
    key="$(pulumi_cli_key)"
    if stamp_ok pulumi-cli "${key}" "${BIN_DIR}/pulumi"; then
        log "pulumi-cli: up to date (${PULUMI_VERSION})"
        return 0
    fi
    log "pulumi-cli: building v${PULUMI_VERSION}"
    dir=$(fresh_module pulumi-cli)
    # go install pkg@version refuses modules with replace directives, so build
    # through a wrapper module that repeats the replace pkg/v3 needs. (pkg/v3's
    # own "sdk/v3 => ../sdk" replace becomes a plain require of the same version.)
    cat >"${dir}/go.mod" <<EOF
module kvm-kubeadm.invalid/toolchain/pulumi-cli

go ${GO_MIN_VERSION}

require (
	github.com/pulumi/pulumi/pkg/v3 v${PULUMI_VERSION}
	github.com/pulumi/pulumi/sdk/v3 v${PULUMI_VERSION}
)

replace github.com/atotto/clipboard => ${PULUMI_CLIPBOARD_REPLACE_MODULE} ${PULUMI_CLIPBOARD_REPLACE_VERSION}
EOF
    go_build "${dir}" "${BIN_DIR}/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
        "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${PULUMI_VERSION}"
    "${BIN_DIR}/pulumi" version >/dev/null
    stamp_write pulumi-cli "${key}"
}

# ---------------------------------------------------------------------------
# shared: the sdk/v3 module directory (exec script, python/dist scripts)
# ---------------------------------------------------------------------------
pulumi_sdk_dir() {
    local dir
    dir="$(cd "${TC_DIR}" && GOFLAGS=-mod=mod go mod download -json \
        "github.com/pulumi/pulumi/sdk/v3@v${PULUMI_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -n "${dir}" && -d "${dir}" ]] || die "could not download github.com/pulumi/pulumi/sdk/v3@v${PULUMI_VERSION}"
    printf '%s\n' "${dir}"
}

# ---------------------------------------------------------------------------
# component: language-python (our own host + the SDK's exec script)
# ---------------------------------------------------------------------------
build_language_python() {
    local src="${TOOLS_DIR}/go/pulumi-language-python" key dir sdk
    key="pulumi=${PULUMI_VERSION} src=$(hash_paths "${src}")"
    if stamp_ok language-python "${key}" "${BIN_DIR}/pulumi-language-python" \
        "${BIN_DIR}/pulumi-language-python-exec"; then
        log "language-python: up to date"
        return 0
    fi
    log "language-python: building (sdk/v3 v${PULUMI_VERSION})"
    dir=$(fresh_module language-python "${src}")
    cat >"${dir}/go.mod" <<EOF
module kvm-kubeadm.invalid/toolchain/pulumi-language-python

go ${GO_MIN_VERSION}

require github.com/pulumi/pulumi/sdk/v3 v${PULUMI_VERSION}
EOF
    go_build "${dir}" "${BIN_DIR}/pulumi-language-python" . "-X main.version=${PULUMI_VERSION}"
    sdk="$(pulumi_sdk_dir)"
    install -m 0755 "${sdk}/python/cmd/pulumi-language-python-exec" "${BIN_DIR}/pulumi-language-python-exec"
    stamp_write language-python "${key}"
}

# ---------------------------------------------------------------------------
# component: python-scripts (dynamic provider / policy scripts from the SDK)
# ---------------------------------------------------------------------------
build_python_scripts() {
    local key sdk f
    key="pulumi=${PULUMI_VERSION}"
    if stamp_ok python-scripts "${key}" "${BIN_DIR}/pulumi-resource-pulumi-python"; then
        log "python-scripts: up to date"
        return 0
    fi
    sdk="$(pulumi_sdk_dir)"
    install -m 0755 "${sdk}/python/dist/pulumi-resource-pulumi-python" "${BIN_DIR}/pulumi-resource-pulumi-python"
    # Optional: only some SDK versions ship the policy analyzer script.
    f=pulumi-analyzer-policy-python
    if [[ -f "${sdk}/python/dist/${f}" ]]; then
        install -m 0755 "${sdk}/python/dist/${f}" "${BIN_DIR}/${f}"
    fi
    stamp_write python-scripts "${key}"
}

# ---------------------------------------------------------------------------
# component: libvirt-provider (our own bridge main, tools/go/pulumi-resource-libvirt)
# ---------------------------------------------------------------------------
libvirt_key() {
    printf 'plugin=%s tf=%s@%s bridge=%s sdk=%s@%s ign=%s@%s src=%s' \
        "${LIBVIRT_PLUGIN_VERSION}" "${TF_LIBVIRT_MODULE}" "${TF_LIBVIRT_VERSION}" "${TF_BRIDGE_VERSION}" \
        "${TF_PLUGIN_SDK_REPLACE_MODULE}" "${TF_PLUGIN_SDK_REPLACE_VERSION}" \
        "${TF_IGNITION_REPLACE_MODULE}" "${TF_IGNITION_REPLACE_VERSION}" \
        "$(hash_paths "${TOOLS_DIR}/go/pulumi-resource-libvirt")"
}

build_libvirt_provider() {
    local src="${TOOLS_DIR}/go/pulumi-resource-libvirt" key dir out
    key="$(libvirt_key)"
    out="${PROVIDER_DIR}/pulumi-resource-libvirt"
    if stamp_ok libvirt-provider "${key}" "${out}"; then
        log "libvirt-provider: up to date"
        return 0
    fi
    log "libvirt-provider: building ${TF_LIBVIRT_MODULE}@${TF_LIBVIRT_VERSION} with bridge ${TF_BRIDGE_VERSION}"
    dir=$(fresh_module libvirt-provider "${src}")
    cat >"${dir}/go.mod" <<EOF
module kvm-kubeadm.invalid/toolchain/pulumi-resource-libvirt

go ${GO_MIN_VERSION}

require (
	${TF_LIBVIRT_MODULE} ${TF_LIBVIRT_VERSION}
	github.com/pulumi/pulumi-terraform-bridge/v3 ${TF_BRIDGE_VERSION}
)

replace (
	github.com/hashicorp/terraform-plugin-sdk/v2 => ${TF_PLUGIN_SDK_REPLACE_MODULE} ${TF_PLUGIN_SDK_REPLACE_VERSION}
	github.com/community-terraform-providers/terraform-provider-ignition/v2 => ${TF_IGNITION_REPLACE_MODULE} ${TF_IGNITION_REPLACE_VERSION}
)
EOF
    # Pass 1: build with a placeholder schema and let the binary generate the
    # real one from its own mapping. Pass 2: embed it.
    printf '{}\n' >"${dir}/schema.json"
    go_build "${dir}" "${dir}/pulumi-resource-libvirt-pass1" . "-X main.version=${LIBVIRT_PLUGIN_VERSION}"
    "${dir}/pulumi-resource-libvirt-pass1" --emit-schema >"${dir}/schema.json.tmp" 2>"${LOG_DIR}/libvirt-schema.log"
    mv -f "${dir}/schema.json.tmp" "${dir}/schema.json"
    rm -f "${dir}/pulumi-resource-libvirt-pass1"
    go_build "${dir}" "${out}" . "-X main.version=${LIBVIRT_PLUGIN_VERSION}"
    stamp_write libvirt-provider "${key}"
}

# ---------------------------------------------------------------------------
# component: command-provider (our own, tools/go/pulumi-resource-command)
# ---------------------------------------------------------------------------
build_command_provider() {
    local src="${TOOLS_DIR}/go/pulumi-resource-command" key dir out
    key="plugin=${COMMAND_PLUGIN_VERSION} pulumi=${PULUMI_VERSION} crypto=${X_CRYPTO_VERSION} src=$(hash_paths "${src}")"
    out="${PROVIDER_DIR}/pulumi-resource-command"
    if stamp_ok command-provider "${key}" "${out}"; then
        log "command-provider: up to date"
        return 0
    fi
    log "command-provider: building (sdk/v3 v${PULUMI_VERSION})"
    dir=$(fresh_module command-provider "${src}")
    cat >"${dir}/go.mod" <<EOF
module kvm-kubeadm.invalid/toolchain/pulumi-resource-command

go ${GO_MIN_VERSION}

require (
	github.com/pulumi/pulumi/sdk/v3 v${PULUMI_VERSION}
	golang.org/x/crypto ${X_CRYPTO_VERSION}
)
EOF
    go_build "${dir}" "${out}" . "-X main.version=${COMMAND_PLUGIN_VERSION}"
    stamp_write command-provider "${key}"
}

# ---------------------------------------------------------------------------
# component: plugins (register the providers in PULUMI_HOME's plugin cache)
# ---------------------------------------------------------------------------
# Each entry: NAME VERSION BINARY
plugin_list() {
    printf '%s %s %s\n' command "${COMMAND_PLUGIN_VERSION}" "${PROVIDER_DIR}/pulumi-resource-command"
    printf '%s %s %s\n' libvirt "${LIBVIRT_PLUGIN_VERSION}" "${PROVIDER_DIR}/pulumi-resource-libvirt"
}

build_plugins() {
    local key name ver bin
    key="$(plugin_list | while read -r name ver bin; do
        printf '%s@%s:%s ' "${name}" "${ver}" "$(sha256sum <"${bin}" | cut -d' ' -f1)"
    done)"
    local -a installed=()
    while read -r name ver bin; do
        installed+=("${PULUMI_HOME_DIR}/plugins/resource-${name}-v${ver}/pulumi-resource-${name}")
    done < <(plugin_list)
    if stamp_ok plugins "${key}" "${installed[@]}"; then
        log "plugins: up to date"
        return 0
    fi
    mkdir -p "${PULUMI_HOME_DIR}"
    while read -r name ver bin; do
        [[ -x "${bin}" ]] || die "plugins: ${bin} missing; build its component first"
        log "plugins: installing resource ${name} ${ver}"
        PULUMI_HOME="${PULUMI_HOME_DIR}" PULUMI_SKIP_UPDATE_CHECK=true \
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true \
            "${BIN_DIR}/pulumi" plugin install resource "${name}" "${ver}" --file "${bin}" --reinstall
    done < <(plugin_list)
    stamp_write plugins "${key}"
}

# ---------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------
# Order matters: later components may use earlier ones (plugins uses pulumi).
COMPONENTS=(pulumi-cli language-python python-scripts command-provider libvirt-provider plugins
    kubeadm containerd2 containerd2-latest containerd1)

run_component() {
    local name="$1"
    case "${name}" in
        pulumi-cli) timed "${name}" build_pulumi_cli ;;
        language-python) timed "${name}" build_language_python ;;
        python-scripts) timed "${name}" build_python_scripts ;;
        command-provider) timed "${name}" build_command_provider ;;
        libvirt-provider) timed "${name}" build_libvirt_provider ;;
        plugins) timed "${name}" build_plugins ;;
        kubeadm) timed "${name}" build_kubeadm ;;
        containerd2) timed "${name}" build_containerd_as "${CONTAINERD2_VERSION}" containerd2 ;;
        containerd2-latest) timed "${name}" build_containerd_as "${CONTAINERD2_LATEST_VERSION}" containerd2-latest ;;
        containerd1) timed "${name}" install_containerd1 ;;
        *) die "unknown component: ${name} (known: ${COMPONENTS[*]})" ;;
    esac
}

main() {
    local -a wanted=()
    local arg
    for arg in "$@"; do
        case "${arg}" in
            --force) FORCE=1 ;;
            -h | --help)
                sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
                return 0
                ;;
            *) wanted+=("${arg}") ;;
        esac
    done
    if [[ ${#wanted[@]} -eq 0 ]]; then
        wanted=("${COMPONENTS[@]}")
    fi
    check_go
    mkdir -p "${BIN_DIR}" "${BUILD_DIR}" "${STAMP_DIR}" "${LOG_DIR}"
    for arg in "${wanted[@]}"; do
        run_component "${arg}"
    done
}

main "$@"
