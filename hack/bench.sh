#!/usr/bin/env bash
# Phase timings of the reference target as JSON (see fixtures/benchmark.py). Example:
#   hack/bench.sh --boots 5 > reports/bench.json
#   hack/bench.sh --reference-guest fedora --kubevirt-version v1.5.3 --boots 3 [--cold]
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh >&2
exec .venv/bin/python -m fixtures.benchmark "$@"
