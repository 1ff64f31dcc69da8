#!/usr/bin/env bash
# The suite's own tests: unit tests, the reference target end to end, negative controls and
# leak checks (tests/). Arguments go to pytest, e.g. hack/test.sh -k console
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO" || exit
hack/setup.sh
# The golden self-test runs KubeVirt's own slirp sidecar code (hack/sidecar-render): build it for
# the nightly releases first, cached (cold: minutes; one clear line and exit 1 without Go).
"$PYTHON" -m slirp_conformance.reference.sidecar_render
mkdir -p reports
# The cluster test bed's parts (tests/testbed) for TESTBED_KUBEVIRT_VERSION, cached by version (cold:
# about 9 min on 2 idle cores, more under load; README "Measured"); their build times go to reports/testbed-build.json.
# Where the bed cannot run (not root) nothing is built and its tests are skipped with the reason.
"$PYTHON" -m tests.testbed build --if-usable > reports/testbed-build.json.part
mv reports/testbed-build.json.part reports/testbed-build.json
# The kind node image of KUBEVIRT_DEFAULT_VERSION's pins, built here and cached by its inputs (cold:
# about 20 min on 2 cores, README "The kind path"); its parts' build times go to reports/kind-build.json.
# Where it cannot be built (not root, no Docker) nothing is built and the kind self-tests are skipped.
# SLIRP_KIND_SELFTEST_KUBEVIRT=v1.1.0 builds and tests another version's pins instead.
kind_pins=()
if [ -n "${SLIRP_KIND_SELFTEST_KUBEVIRT:-}" ]; then kind_pins=(--kubevirt-version "$SLIRP_KIND_SELFTEST_KUBEVIRT"); fi
"$PYTHON" -m slirp_conformance.kindnode build --if-usable "${kind_pins[@]}" > reports/kind-build.json.part
mv reports/kind-build.json.part reports/kind-build.json
suite_pytest tests --junitxml=reports/selftests.xml "$@"
