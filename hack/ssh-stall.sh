#!/usr/bin/env bash
# The SSH "stall" on demand: the ICMP probe over SSH and the next command in a loop; JSON on stdout. E.g.
#   hack/ssh-stall.sh --iterations 20                                   # Fedora-like guest, the suite's deadlines
#   hack/ssh-stall.sh --iterations 3 --pause-vcpus 40 --ping-timeout 26 # a starved guest and the old deadline
# (see src/slirp_conformance/ssh_stall.py and README, "The SSH stall").
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_venv
exec "$PYTHON" -m slirp_conformance.ssh_stall "$@"
