#!/usr/bin/env bash
# The suite's own tests: unit tests, the reference target end to end, negative controls and
# leak checks (tests/). Arguments go to pytest, e.g. hack/test.sh -k console
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
mkdir -p reports
exec .venv/bin/python -m pytest tests --junitxml=reports/selftests.xml "$@"
