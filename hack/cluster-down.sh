#!/usr/bin/env bash
# Delete the suite's kind cluster, but only if hack/cluster-up.sh created it (or --force).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

usage() {
  cat <<USAGE
Usage: hack/cluster-down.sh [--name NAME] [--workdir DIR] [--force] [-v]

Deletes the kind cluster NAME when hack/cluster-up.sh recorded that it created it
(<workdir>/state.json); a cluster it only reused is left alone unless --force.
USAGE
}

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ -x "$PYTHON" ] || { echo "cluster-down: error: $PYTHON not found; run hack/setup.sh first (or set PYTHON)" >&2; exit 1; }
export PATH="$REPO/.tools/bin:$PATH"
cd "$REPO"
exec "$PYTHON" -m fixtures.cluster.cli down "$@"
