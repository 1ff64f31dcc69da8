#!/usr/bin/env bash
# The suite's own tests: unit tests, the reference target end to end, the kind path and KubeVirt on
# it end to end (a real kind cluster, every image built here), negative controls and leak checks
# (tests/). Arguments go to pytest, e.g. hack/test.sh -k console
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO" || exit
hack/setup.sh --dev
# The golden self-test runs KubeVirt's own slirp sidecar code (hack/sidecar-render): build it for
# the nightly releases first, cached (cold: minutes; one clear line and exit 1 without Go).
"$PYTHON" -m slirp_conformance.reference.sidecar_render
mkdir -p reports
# The kind node image of KUBEVIRT_DEFAULT_VERSION's pins, built here and cached by its inputs (cold:
# about 20 min on 2 cores, README "The kind path"); its parts' build times go to reports/kind-build.json.
# Where it cannot be built (not root, no Docker) nothing is built and the kind self-tests are skipped.
# SLIRP_KIND_SELFTEST_KUBEVIRT=v1.1.0 builds and tests another version's pins instead.
kind_version="${SLIRP_KIND_SELFTEST_KUBEVIRT:-}"
kind_pins=()
if [ -n "$kind_version" ]; then kind_pins=(--kubevirt-version "$kind_version"); fi
"$PYTHON" -m slirp_conformance.kindnode build --if-usable "${kind_pins[@]}" > reports/kind-build.json.part
mv reports/kind-build.json.part reports/kind-build.json
# KubeVirt's images and release manifests of the same release (cached by version; cold: README
# "Measured"), so the kind cluster with KubeVirt (tests/conftest.py kubevirt_kind) starts warm.
if grep -q '"skipped"' reports/kind-build.json; then
    cp reports/kind-build.json reports/kubevirt-build.json
else
    kubevirt_version="$("$PYTHON" -m slirp_conformance.cluster.cli pins "${kind_pins[@]}" | sed -n 's/^KUBEVIRT_VERSION=//p')"
    "$PYTHON" -m slirp_conformance.kubevirt_images build --kubevirt-version "$kubevirt_version" \
        > reports/kubevirt-build.json.part
    mv reports/kubevirt-build.json.part reports/kubevirt-build.json
fi
# Two workers: the Docker engine's tests (kind, KubeVirt) on one, the reference VMs on the other
# (tests/conftest.py group_of): warm, about 20 min side by side against 35 min one after the other.
suite_pytest tests -n 2 --dist loadgroup --junitxml=reports/selftests.xml "$@"
