#!/usr/bin/env bash
# Create (or reuse) the suite's kind cluster for a KubeVirt release and install KubeVirt in it.
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: hack/cluster-up.sh [--kubevirt-version V] [--name NAME] [--workdir DIR]
                          [--kubevirt-manifests DIR] [--preload-images IMAGE...] [--no-kubevirt]
                          [--images-from-source] [--nodes N] [--kvm auto|yes|no] [-v]

Runs the preflight (docker, pinned kind/kubectl, /dev/kvm), creates the kind cluster from the
suite's config (containerd unprivileged ICMP/ports pinned off; /dev/kvm mounted when usable)
or reuses one of the same name, and installs KubeVirt when absent (useEmulation without KVM).
No Docker answering: the project starts its own dockerd (as root) and keeps it for the cluster.
--images-from-source builds kind, kubectl and the node image of the pinned Kubernetes here
(Go modules and Debian packages, cached by version; cold: about 20 min) and gives the cluster
the suite's CNI instead of kindnetd; unless --no-kubevirt, it also builds KubeVirt's images of
the release (virt-operator and what it deploys, the slirp sidecar, the Fedora-like containerDisk,
the peer image; cold: about 15 min) and its release manifests from kubevirt.io/kubevirt at the
tag, loads them into the nodes and installs KubeVirt through its operator.
--nodes N: a control plane and N-1 workers.
Prints DOCKER_HOST=<socket> (when it is the project's dockerd) and KUBECONFIG=<path>; the
kubeconfig itself is never printed. Exit 4: bad input or a host that cannot run it (one line).
Pins: hack/versions.env. Tools: hack/install-tools.sh. Undo: hack/cluster-down.sh.
USAGE
}

cluster_cli up "$@"
