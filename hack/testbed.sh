#!/usr/bin/env bash
# The cluster test bed: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok,
# KubeVirt's own CRDs, CR and webhooks, virt-api and virt-controller, built from Go modules by
# version (cached) and run as local processes on loopback (README: "The cluster test bed").
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: hack/testbed.sh [--timeout-scale F] build [--kubevirt-version V]
       hack/testbed.sh [--timeout-scale F] up [--kubevirt-version V] --kubeconfig PATH [--reference-guest busybox|fedora]
       hack/testbed.sh down --kubeconfig PATH
       hack/testbed.sh [--timeout-scale F] bench [--kubevirt-version V] [--reference-guest G]

build builds (or finds in ~/.cache/slirp-conformance/go) every part and prints their build times (JSON).
up    builds (or reuses) and starts the bed, writes the admin kubeconfig to PATH (which must not
      exist) and prints a JSON summary with build and start times.
      --reference-guest fedora: the node agent boots the Fedora-like guest of that KubeVirt version
      behind each VMI, from the VMI's own cloudInitNoCloud (slower: 20-60 s to login under TCG).
down  stops every process up started and removes PATH, PATH.testbed.json and the bed's temp dir.
bench up, \`pytest -k slirp --target=cluster\` against the bed, down: each phase's time and the
      run's outcome (JSON); exit 1 when the run fails.
V defaults to TESTBED_KUBEVIRT_VERSION; pins: TESTBED_* in hack/versions.env. Needs Go (/usr/local/go
or PATH), hack/setup.sh, and root (virt-api's address is on a veth).
USAGE
}

case "${1:-}" in ""|-h|--help) usage; exit 0 ;; esac
need_venv
# No cd: a relative --kubeconfig means relative to where the user is.
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m tests.testbed "$@"
