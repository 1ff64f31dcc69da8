#!/usr/bin/env bash
# Delete the suite's kind cluster, but only if hack/cluster-up.sh created it (or --force).
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: hack/cluster-down.sh [--name NAME] [--workdir DIR] [--force] [-v]

Deletes the kind cluster NAME when hack/cluster-up.sh recorded that it created it
(<workdir>/state.json); a cluster it only reused is left alone unless --force. Also removes the
Docker network and the empty /lib/modules cluster-up made for it, and stops the project's
dockerd when cluster-up started it and nothing else uses it.
USAGE
}

cluster_cli down "$@"
