#!/usr/bin/env bash
# Prepares this machine for the suite: Debian/Ubuntu packages (as root) and .venv/ in the repo.
# Idempotent: a second run installs nothing. Used by conformance.sh, test.sh and .ci/run.
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO" || exit

# What the qemu reference target and the self-tests need from the OS.
APT_PACKAGES=(qemu-system-x86 busybox-static dropbear-bin netcat-openbsd iproute2 iputils-ping util-linux
              procps kmod ca-certificates)
# The Fedora-like reference guests (--reference-guest fedora): built with debootstrap and mke2fs,
# booted from a qcow2 overlay with a cloud-init ISO.
APT_PACKAGES+=(debootstrap e2fsprogs xorriso qemu-utils)
python3 -c 'import ensurepip, venv' 2>/dev/null || APT_PACKAGES+=(python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        if sudo -n true 2>/dev/null; then  # CI runners: passwordless sudo
            as_root=(sudo -n)
        else
            echo "setup: missing packages: ${missing[*]}" >&2
            echo "setup: run as root, or first: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "setup: installing ${missing[*]}"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test,lint]'
    rm -f .venv/.installed-* && touch "$stamp"
fi
