#!/usr/bin/env bash
# Phase timings of the reference target as JSON (see src/slirp_conformance/benchmark.py). Example:
#   hack/bench.sh --boots 5 [--warm-runs 5] > reports/bench.json
#   hack/bench.sh --reference-guest fedora --kubevirt-version v1.5.3 --boots 3 [--cold]
# and of the kind path (src/slirp_conformance/kindnode/bench.py: node image build per part, warm
# cluster create, delete):
#   hack/bench.sh --kind [--kubevirt-version V] [--cold] [--nodes N]
# and of KubeVirt on it (src/slirp_conformance/kubevirt_images/bench.py: KubeVirt's images per part,
# cluster create, image load, KubeVirt Available, VMI Running, console login, the suite, delete):
#   hack/bench.sh --kubevirt [--kubevirt-version V] [--cold] [--kind-cluster-name N] [--timeout-scale S]
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
"$REPO/hack/setup.sh" >&2
if [ "${1:-}" = --kind ]; then
    shift
    exec "$PYTHON" -m slirp_conformance.kindnode.bench "$@"
fi
if [ "${1:-}" = --kubevirt ]; then
    shift
    exec "$PYTHON" -m slirp_conformance.kubevirt_images.bench "$@"
fi
exec "$PYTHON" -m slirp_conformance.benchmark "$@"
