#!/usr/bin/env bash
# The suite's own tests: unit tests, the reference target end to end, negative controls and
# leak checks (tests/). Arguments go to pytest, e.g. hack/test.sh -k console
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
# The golden self-test runs KubeVirt's own slirp sidecar code (hack/sidecar-render): build it for
# the nightly releases first, cached (cold: minutes; one clear line and exit 1 without Go).
.venv/bin/python -m fixtures.reference.sidecar_render
mkdir -p reports
exec .venv/bin/python -m pytest tests --junitxml=reports/selftests.xml "$@"
