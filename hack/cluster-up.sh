#!/usr/bin/env bash
# Create (or reuse) the suite's kind cluster for a KubeVirt release and install KubeVirt in it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

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
[ -x "$PYTHON" ] || { echo "cluster-up: error: $PYTHON not found; run hack/setup.sh first (or set PYTHON)" >&2; exit 1; }
export PATH="$REPO/.tools/bin:$PATH"
cd "$REPO"
exec "$PYTHON" -m fixtures.cluster.cli up "$@"
