#!/usr/bin/env bash
# Nightly / release-gate run for one KubeVirt release: cluster up -> slirp suite -> cluster down
# (always, also when the tests or the setup fail).
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: hack/nightly.sh --kubevirt-version V [--artifacts DIR] [--junitxml FILE] [--keep-cluster]
                       [-- EXTRA PYTEST ARGS]

  --kubevirt-version V  a release in v1.1.0..v1.9.x (pins: hack/versions.env)
  --artifacts DIR       logs, transcripts, evidence (default: reports/nightly-V)
  --junitxml FILE       JUnit report (default: ARTIFACTS/junit.xml); the conformance report goes
                        to ARTIFACTS/conformance.md and .json
  --keep-cluster        do not delete the cluster at the end (debugging)

Exit status: pytest's (0 all passed, 1 failures, ...), or non-zero when the cluster setup failed.
USAGE
}


version=""; artifacts=""; junit=""; keep=false; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kubevirt-version) [ $# -ge 2 ] || die "--kubevirt-version needs a value" 2; version="$2"; shift ;;
    --artifacts) [ $# -ge 2 ] || die "--artifacts needs a value" 2; artifacts="$2"; shift ;;
    --junitxml) [ $# -ge 2 ] || die "--junitxml needs a value" 2; junit="$2"; shift ;;
    --keep-cluster) keep=true ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" 2 ;;
  esac
  shift
done
[ -n "$version" ] || { usage >&2; die "--kubevirt-version is required" 2; }
need_venv

cd "$REPO" || exit
export PATH="$REPO/.tools/bin:$PATH"
artifacts="${artifacts:-reports/nightly-$version}"
junit="${junit:-$artifacts/junit.xml}"
mkdir -p "$artifacts" "$(dirname "$junit")"
cluster_name="slirp-conformance"

# shellcheck disable=SC2317  # reached through the EXIT trap below
teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ] && command -v kind >/dev/null; then
    echo "nightly: collecting kind logs into $artifacts/kind-logs" >&2
    timeout 300 kind export logs "$artifacts/kind-logs" --name "$cluster_name" >/dev/null 2>&1 || true
  fi
  if $keep; then
    echo "nightly: keeping cluster $cluster_name (hack/cluster-down.sh deletes it)" >&2
  else
    hack/cluster-down.sh --name "$cluster_name" || echo "nightly: warning: cluster-down failed (rc $?)" >&2
  fi
  exit "$rc"
}
trap teardown EXIT

hack/cluster-up.sh --kubevirt-version "$version" --name "$cluster_name"

set +e
suite_pytest -k slirp --target=kind --kubevirt-version "$version" \
  --junitxml "$junit" --artifacts "$artifacts" --report-dir "$artifacts" ${extra[@]+"${extra[@]}"}
rc=$?
set -e
echo "nightly: pytest exited with $rc (JUnit: $junit, report: $artifacts/conformance.md, artifacts: $artifacts)"
exit "$rc"
