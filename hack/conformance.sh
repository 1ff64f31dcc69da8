#!/usr/bin/env bash
# The main job: the slirp conformance run. Arguments go to pytest, e.g.
#   hack/conformance.sh --target=qemu
#   hack/conformance.sh --target=kind --kubevirt-version v1.5.2
#   hack/conformance.sh --target=cluster --kubeconfig ~/.kube/config
# JUnit XML lands in reports/conformance.xml, artifacts of failed checks in reports/artifacts/.
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
"$REPO/hack/setup.sh"
mkdir -p "$REPO/reports"
# Outputs go to the checkout's reports/ from any directory; options given later override these.
suite_pytest "$REPO/suites" -k slirp --junitxml="$REPO/reports/conformance.xml" --artifacts="$REPO/reports/artifacts" \
    --report-dir="$REPO/reports" "$@"
