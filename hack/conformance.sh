#!/usr/bin/env bash
# The main job: the slirp conformance run. Arguments go to pytest, e.g.
#   hack/conformance.sh --target=qemu
#   hack/conformance.sh --target=kind --kubevirt-version v1.5.2
#   hack/conformance.sh --target=cluster --kubeconfig ~/.kube/config
# JUnit XML lands in reports/conformance.xml, artifacts of failed checks in reports/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
mkdir -p reports
exec .venv/bin/python -m pytest -k slirp --junitxml=reports/conformance.xml --artifacts=reports/artifacts "$@"
