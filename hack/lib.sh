# The shared preamble of hack/*.sh: `. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"` first thing.
# Sets strict mode, REPO (the checkout), PYTHON (its venv) and the helpers below. It does not
# cd: a relative path the user passes means relative to where the user is.
# shellcheck shell=bash
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
SCRIPT="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

# die MESSAGE [EXIT]: one line naming the fix, on stderr.
die() { echo "$SCRIPT: error: $1" >&2; exit "${2:-1}"; }

# need_venv: the project's Python is there (hack/setup.sh makes it).
need_venv() { [ -x "$PYTHON" ] || die "$PYTHON not found; run hack/setup.sh first (or set PYTHON)"; }

# suite_pytest ARGS...: pytest rooted in the checkout whatever the working directory is, so a
# bare path after an option (--kubeconfig PATH) is never taken for the root (no re-exec needed).
suite_pytest() { "$PYTHON" -m pytest -c "$REPO/pyproject.toml" --rootdir "$REPO" "$@"; }

# cluster_cli COMMAND ARGS...: hack/cluster-{up,down}.sh: the script's usage on -h/--help, else
# `python -m slirp_conformance.cluster.cli COMMAND ARGS...` with the pinned tools on PATH.
cluster_cli() {
  local command=$1
  shift
  case "${1:-}" in -h|--help) usage; exit 0 ;; esac
  need_venv
  export PATH="$REPO/.tools/bin:$PATH"
  cd "$REPO" || exit
  exec "$PYTHON" -m slirp_conformance.cluster.cli "$command" "$@"
}
