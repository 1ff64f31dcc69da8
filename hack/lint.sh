#!/usr/bin/env bash
# Static checks: the Python (ruff's lint and format check, mypy over the package, fixtures/ and
# suites/; their pins and configuration are in pyproject.toml, installed by hack/setup.sh), the
# shell scripts (hack/, .ci/ and the reference guests' scripts: shellcheck) and the nightly
# workflow (actionlint, which also checks its run: blocks with shellcheck). Installs what it runs:
# the venv (hack/setup.sh), Debian's shellcheck, and actionlint as a Go module built once into the
# project's cache.
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO" || exit
hack/setup.sh --dev

echo "lint: ruff check"
"$PYTHON" -m ruff check .
echo "lint: ruff format --check"
"$PYTHON" -m ruff format --check .
echo "lint: mypy (src/, fixtures/, suites/)"
"$PYTHON" -m mypy

ACTIONLINT_VERSION=v1.7.12
cache=${SLIRP_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slirp-conformance}
bin=$cache/tools/actionlint-$ACTIONLINT_VERSION

if ! command -v shellcheck >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "lint: shellcheck missing: run as root, or first: sudo apt-get install shellcheck" >&2
        exit 1
    fi
    echo "lint: installing shellcheck (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            shellcheck >/dev/null; }
fi
if [[ ! -x $bin/actionlint ]]; then
    command -v go >/dev/null || { echo "lint: go is missing: install Go to build actionlint" >&2; exit 1; }
    echo "lint: building actionlint $ACTIONLINT_VERSION (once; cached in $bin)"
    mkdir -p "$cache/tools"
    stage=$(mktemp -d "$cache/tools/.actionlint.$$.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    GOBIN=$stage GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
    rm -rf "$bin" && mv "$stage" "$bin"
    trap - EXIT
fi

mapfile -t scripts < <(git ls-files 'hack/*.sh' '.ci/run')
echo "lint: shellcheck ${#scripts[@]} scripts"
shellcheck -x "${scripts[@]}"
# The guests' own scripts (busybox sh in the reference guest, busybox ash in the Fedora-like initramfs).
mapfile -t guest < <(git ls-files 'src/slirp_conformance/reference/*.sh' 'src/slirp_conformance/reference/*.script')
echo "lint: shellcheck ${#guest[@]} guest scripts"
shellcheck "${guest[@]}"
echo "lint: actionlint .github/workflows/"
"$bin/actionlint" -shellcheck "$(command -v shellcheck)" .github/workflows/*.yml
echo "lint: clean"
