#!/usr/bin/env bash
# The soak: the whole slirp contract N times, each a separate pytest run; JSON on stdout. E.g.
#   hack/soak.sh --runs 5 --target=qemu
#   hack/soak.sh --runs 3 --target=qemu --reference-guest fedora --kubevirt-version v1.1.0
#   hack/soak.sh --runs 10 --load --target=qemu --reference-guest fedora --timeout-scale 2
#   hack/soak.sh --runs 3 --target=cluster --kubeconfig "$KUBECONFIG"
# --load: two CPU burners beside the runs (gone with the soak, also on Ctrl-C). Every other option
# goes to each run (see src/slirp_conformance/soak.py); each run's reports: reports/soak-<time>/run-NNN/.
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
"$REPO/hack/setup.sh" >&2
exec "$PYTHON" -m slirp_conformance.soak "$@"
