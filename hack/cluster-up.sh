#!/usr/bin/env bash
# Create (or reuse) the suite's kind cluster for a KubeVirt release and install KubeVirt in it.
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: hack/cluster-up.sh [--kubevirt-version V] [--name NAME] [--workdir DIR]
                          [--kubevirt-manifests DIR] [--preload-images IMAGE...] [--no-kubevirt]
                          [--kvm auto|yes|no] [-v]

Runs the preflight (docker, pinned kind/kubectl, /dev/kvm), creates the kind cluster from the
suite's config (containerd unprivileged ICMP/ports pinned off; /dev/kvm mounted when usable)
or reuses one of the same name, and installs KubeVirt when absent (useEmulation without KVM).
Prints KUBECONFIG=<path>; the kubeconfig itself is never printed.
Pins: hack/versions.env. Tools: hack/install-tools.sh. Undo: hack/cluster-down.sh.
USAGE
}

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
need_venv
export PATH="$REPO/.tools/bin:$PATH"
cd "$REPO" || exit
exec "$PYTHON" -m slirp_conformance.cluster.cli up "$@"
