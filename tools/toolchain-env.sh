# Source this file (bash/zsh) to use the project-local Pulumi toolchain built
# by tools/build-toolchain.sh:
#
#   source tools/toolchain-env.sh
#
# It puts .toolchain/bin (pulumi, pulumi-language-python, the Python dynamic
# provider script) first on PATH, points PULUMI_HOME at .toolchain/pulumi-home
# (whose plugin cache holds the command and libvirt providers), and stops the
# CLI from checking for updates or downloading plugins.
# shellcheck shell=bash

if [ -n "${BASH_SOURCE[0]:-}" ]; then
    _kk_tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
elif [ -n "${ZSH_VERSION:-}" ]; then
    # shellcheck disable=SC2296 # zsh-only expansion
    _kk_tools_dir="$(cd "$(dirname "${(%):-%x}")" && pwd)"
else
    _kk_tools_dir="$(pwd)/tools"
fi
KVM_KUBEADM_TOOLCHAIN="$(cd "${_kk_tools_dir}/.." && pwd)/.toolchain"
unset _kk_tools_dir

case ":${PATH}:" in
    *":${KVM_KUBEADM_TOOLCHAIN}/bin:"*) ;;
    *) PATH="${KVM_KUBEADM_TOOLCHAIN}/bin:${PATH}" ;;
esac
PULUMI_HOME="${KVM_KUBEADM_TOOLCHAIN}/pulumi-home"
PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export KVM_KUBEADM_TOOLCHAIN PATH PULUMI_HOME PULUMI_SKIP_UPDATE_CHECK PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION
