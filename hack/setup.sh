#!/usr/bin/env bash
# Prepares this machine for the suite: Debian/Ubuntu packages (as root) and .venv/ in the repo.
# Idempotent: a second run installs nothing. Used by conformance.sh, test.sh and .ci/run.
#   hack/setup.sh         what a conformance run needs (the main job's first run waits for no more)
#   hack/setup.sh --dev   and the lint and self-test tools (pyproject's lint and selftest extras)
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO" || exit
case "${1:-}" in
    "") extras=runtime install='.' ;;
    --dev) extras=dev install='.[lint,selftest]' ;;
    *) die "unknown option ${1}: no option (what a conformance run needs) or --dev (and lint and self-tests)" 4 ;;
esac

# What the qemu reference target and the self-tests need from the OS.
APT_PACKAGES=(qemu-system-x86 busybox-static dropbear-bin netcat-openbsd iproute2 iputils-ping util-linux
              procps kmod ca-certificates)
# The Fedora-like reference guests (--reference-guest fedora): built with debootstrap and mke2fs,
# booted from a qcow2 overlay with a cloud-init ISO.
APT_PACKAGES+=(debootstrap e2fsprogs xorriso qemu-utils)
python3 -c 'import ensurepip, venv' 2>/dev/null || APT_PACKAGES+=(python3-venv)
# --target=kind and the kind self-tests: a Docker engine. One that answers is used as it is;
# otherwise Debian's docker.io (dockerd, containerd, runc, iptables), which the project starts
# itself with its own configuration (src/slirp_conformance/docker_daemon.py) and stops again.
# The static pause binary of the kind node image is compiled with gcc against glibc.
APT_PACKAGES+=(gcc libc6-dev)
# --images-from-source, KubeVirt's part (src/slirp_conformance/kubevirt_images): virt-handler and
# virt-launcher are cgo (gcc, glibc's headers, <linux/kvm.h>), the launcher's container-disk helper
# a static C program; the Fedora-like containerDisk is made bootable with GRUB for BIOS
# (grub-mkrescue of grub-common, the i386-pc modules of grub-pc-bin; no bootloader is installed
# on this machine).
APT_PACKAGES+=(linux-libc-dev grub-common grub-pc-bin)
if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    APT_PACKAGES+=(docker.io)
fi

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
    # docker.io's maintainer scripts would start the system's dockerd (default bridge on
    # 172.17.0.0/16, no runtime wrapper): a policy-rc.d that refuses keeps them from doing so for
    # this install; the project starts its own dockerd when it needs one.
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# slirp-conformance hack/setup.sh: no service starts during its apt-get install\nexit 101\n' |
            "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 0755 "$policy"
        own_policy=true
        trap '"${as_root[@]}" rm -f "$policy"' EXIT
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if $own_policy; then
        "${as_root[@]}" rm -f "$policy"
        trap - EXIT
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
# One stamp per pyproject.toml and set of extras; the dev stamp stands for the runtime one too.
digest=$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f .venv/.installed-$digest-dev && ! -f .venv/.installed-$digest-$extras ]]; then
    echo "setup: installing the suite's Python packages ($extras) into .venv" >&2
    started=$SECONDS
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e "$install"
    rm -f .venv/.installed-* && touch ".venv/.installed-$digest-$extras"
    echo "setup: Python packages installed in $((SECONDS - started)) s" >&2
fi
